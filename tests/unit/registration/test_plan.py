"""plan/apply against the in-memory entry server: create, update per field, delete, never touch others."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from broker.registration import (
    DEFAULT_ENTRY_ID_PREFIX,
    Entry,
    EntryStatus,
    InMemoryEntryServer,
    RegistrationError,
    Selector,
    WorkloadsFile,
    apply,
    parse_workloads,
    plan,
    render_plan,
)
from broker.registration.plan import FieldChange

BASE = """\
trust_domain: example.org
defaults: {parent_id: spiffe://example.org/agent/test, x509_svid_ttl: 3600, jwt_svid_ttl: 300}
workloads:
  - name: web
    spiffe_id: spiffe://example.org/ns/shop/sa/web
    selectors: ["k8s:ns:shop", "k8s:sa:web"]
  - name: api
    spiffe_id: spiffe://example.org/ns/shop/sa/api
    selectors: ["k8s:ns:shop", "k8s:sa:api"]
  - name: batch
    spiffe_id: spiffe://example.org/batch
    selectors: ["unix:uid:1000"]
"""
PARENT = "spiffe://example.org/agent/test"


def _file(text: str = BASE) -> WorkloadsFile:
    return parse_workloads(text)


def _applied(text: str = BASE) -> InMemoryEntryServer:
    server = InMemoryEntryServer()
    apply(plan(_file(text), server), server)
    server.writes.clear()
    return server


def _id_of(server: InMemoryEntryServer, spiffe_id: str) -> str:
    return next(e.id for e in server.list_entries() if e.spiffe_id == spiffe_id)


def test_plan_on_empty_server_creates_every_workload_without_taking_over_the_hint() -> None:
    server = InMemoryEntryServer()
    result = plan(_file(), server)
    assert [c.workload for c in result.creates] == ["web", "api", "batch"]
    assert (result.updates, result.deletes) == ((), ())
    web = result.creates[0].entry
    assert web.hint == ""
    assert web.selectors == (Selector("k8s", "ns:shop"), Selector("k8s", "sa:web"))
    assert (web.parent_id, web.x509_svid_ttl, web.jwt_svid_ttl) == (PARENT, 3600, 300)


def test_apply_twice_second_plan_reports_no_changes() -> None:
    server = InMemoryEntryServer()
    created = apply(plan(_file(), server), server)
    assert len(created.created) == 3
    again = plan(_file(), server)
    assert not again.has_changes
    assert again.unchanged == ("web", "api", "batch")
    assert apply(again, server).created == ()
    assert [kind for kind, _ in server.writes] == ["create"] * 3
    assert "No changes" in render_plan(again)


def test_changed_ttl_updates_exactly_that_entry_and_only_that_field() -> None:
    server = _applied()
    api_id = _id_of(server, "spiffe://example.org/ns/shop/sa/api")
    edited = BASE.replace('["k8s:ns:shop", "k8s:sa:api"]\n', '["k8s:ns:shop", "k8s:sa:api"]\n    jwt_svid_ttl: 60\n')
    result = plan(_file(edited), server)
    assert (result.creates, result.deletes) == ((), ())
    (update,) = result.updates
    assert (update.workload, update.entry.id) == ("api", api_id)
    assert update.changes == (FieldChange("jwt_svid_ttl", 300, 60),)
    apply(result, server)
    assert server.writes == [("update", api_id)]
    assert server.get(api_id).jwt_svid_ttl == 60
    assert server.get(api_id).revision_number == 1
    assert "      jwt_svid_ttl: 300 -> 60" in render_plan(result)


def test_removed_workload_deletes_only_its_entry() -> None:
    server = _applied()
    batch_id = _id_of(server, "spiffe://example.org/batch")
    trimmed = BASE[: BASE.index("  - name: batch")]
    result = plan(_file(trimmed), server)
    assert [d.entry.id for d in result.deletes] == [batch_id]
    assert (result.creates, result.updates) == ((), ())
    apply(result, server)
    assert server.writes == [("delete", batch_id)]
    assert len(server.list_entries()) == 2


def test_unmanaged_entries_are_never_updated_or_deleted() -> None:
    unmanaged = Entry("spiffe://example.org/legacy", PARENT, (Selector("unix", "uid:7"),), 60, 60, hint="")
    hinted_other = replace(unmanaged, spiffe_id="spiffe://example.org/hinted", hint="something-else")
    server = InMemoryEntryServer([unmanaged, hinted_other])
    apply(plan(_file(), server), server)
    empty = parse_workloads("trust_domain: example.org\nworkloads: []\n")
    result = plan(empty, server)
    assert {d.entry.spiffe_id for d in result.deletes} == {
        "spiffe://example.org/ns/shop/sa/web",
        "spiffe://example.org/ns/shop/sa/api",
        "spiffe://example.org/batch",
    }
    apply(result, server)
    assert {e.spiffe_id for e in server.list_entries()} == {unmanaged.spiffe_id, hinted_other.spiffe_id}


def test_workload_matching_an_unmanaged_entry_is_an_error_not_a_takeover() -> None:
    squatter = Entry("spiffe://example.org/batch", PARENT, (Selector("unix", "uid:1000"),), 60, 60, id="e-1")
    server = InMemoryEntryServer([squatter])
    with pytest.raises(RegistrationError, match=r"workload 'batch': spiffe://example.org/batch .*\(entry e-1\)"):
        plan(_file(), server)
    assert server.writes == []


def test_selector_change_creates_the_new_entry_before_deleting_the_old() -> None:
    server = _applied()
    old_id = _id_of(server, "spiffe://example.org/batch")
    result = plan(_file(BASE.replace("unix:uid:1000", "unix:uid:1001")), server)
    assert [c.workload for c in result.creates] == ["batch"]
    assert [d.entry.id for d in result.deletes] == [old_id]
    apply(result, server)
    assert [kind for kind, _ in server.writes] == ["create", "delete"]


def test_drift_on_a_managed_entry_is_reverted_field_by_field() -> None:
    server = _applied()
    web_id = _id_of(server, "spiffe://example.org/ns/shop/sa/web")
    server.batch_update_entries(
        [replace(server.get(web_id), admin=True, dns_names=("x.example",))], {"admin", "dns_names"}
    )
    server.writes.clear()
    (update,) = plan(_file(), server).updates
    assert update.changes == (FieldChange("dns_names", ("x.example",), ()), FieldChange("admin", True, False))
    assert update.fields == frozenset({"admin", "dns_names"})


def test_duplicate_managed_entries_keep_one_and_delete_the_rest() -> None:
    entry = Entry("spiffe://example.org/batch", PARENT, (Selector("unix", "uid:1000"),), 3600, 300)
    server = InMemoryEntryServer([replace(entry, id="spiffe-broker.a"), replace(entry, id="spiffe-broker.b")])
    result = plan(_file(BASE[: BASE.index("  - name: web")] + BASE[BASE.index("  - name: batch") :]), server)
    assert [d.entry.id for d in result.deletes] == ["spiffe-broker.b"]
    assert result.unchanged == ("batch",)


def test_failed_create_status_names_the_entry_and_stops_before_deletes() -> None:
    server = _applied()
    server.failures["spiffe://example.org/new"] = EntryStatus(3, "invalid selector")
    # batch is renamed (one create, one delete) and a new workload is added (a second create).
    edited = BASE.replace("spiffe_id: spiffe://example.org/batch\n", "spiffe_id: spiffe://example.org/batch2\n")
    edited += '  - name: new\n    spiffe_id: spiffe://example.org/new\n    selectors: ["unix:uid:5"]\n'
    result = plan(_file(edited), server)
    assert (len(result.creates), len(result.deletes)) == (2, 1)
    with pytest.raises(RegistrationError) as info:
        apply(result, server)
    message = info.value.description
    assert "1 of 2 creates failed" in message
    assert "workload 'new' spiffe://example.org/new parent=spiffe://example.org/agent/test" in message
    assert f"(entry {DEFAULT_ENTRY_ID_PREFIX}" in message
    assert "INVALID_ARGUMENT: invalid selector" in message
    assert [kind for kind, _ in server.writes] == ["create"]
    assert _id_of(server, "spiffe://example.org/batch")  # the old entry is still there


def test_failed_delete_status_is_an_error_naming_the_entry() -> None:
    server = _applied()
    server.failures["spiffe://example.org/batch"] = EntryStatus(13, "datastore down")
    result = plan(_file(BASE[: BASE.index("  - name: batch")]), server)
    with pytest.raises(RegistrationError, match=r"1 of 1 deletes failed: spiffe://example.org/batch .*INTERNAL"):
        apply(result, server)


def test_apply_sends_creates_in_batches() -> None:
    lines = ["trust_domain: example.org", f"defaults: {{parent_id: {PARENT}, x509_svid_ttl: 60, jwt_svid_ttl: 60}}"]
    lines.append("workloads:")
    for i in range(120):
        lines += [f"  - name: w{i}", f"    spiffe_id: spiffe://example.org/w/{i}", f'    selectors: ["unix:uid:{i}"]']
    server = InMemoryEntryServer()
    result = apply(plan(_file("\n".join(lines) + "\n"), server), server)
    assert len(result.created) == 120
    assert server.batch_sizes == [50, 50, 20]


def test_updates_with_different_changed_fields_go_in_separate_batches() -> None:
    server = _applied()
    edited = BASE.replace('["k8s:ns:shop", "k8s:sa:api"]\n', '["k8s:ns:shop", "k8s:sa:api"]\n    jwt_svid_ttl: 60\n')
    edited = edited.replace('["unix:uid:1000"]\n', '["unix:uid:1000"]\n    x509_svid_ttl: 60\n')
    result = plan(_file(edited), server)
    server.batch_sizes.clear()
    applied = apply(result, server)
    assert len(applied.updated) == 2
    assert server.batch_sizes == [1, 1]


def test_render_plan_lists_creates_updates_and_deletes() -> None:
    server = _applied()
    batch_id = _id_of(server, "spiffe://example.org/batch")
    edited = BASE.replace('["k8s:ns:shop", "k8s:sa:api"]\n', '["k8s:ns:shop", "k8s:sa:api"]\n    x509_svid_ttl: 600\n')
    edited = edited.replace(
        "name: batch\n    spiffe_id: spiffe://example.org/batch", "name: b2\n    spiffe_id: spiffe://example.org/b2"
    )
    text = render_plan(plan(_file(edited), server))
    assert text.splitlines() == [
        "Plan: 1 to create, 1 to update, 1 to delete, 1 unchanged.",
        "  + b2: spiffe://example.org/b2 parent=spiffe://example.org/agent/test selectors=unix:uid:1000",
        "      x509_svid_ttl=3600 jwt_svid_ttl=300",
        "  ~ api: spiffe://example.org/ns/shop/sa/api parent=spiffe://example.org/agent/test "
        f"selectors=k8s:ns:shop,k8s:sa:api (entry {_id_of(server, 'spiffe://example.org/ns/shop/sa/api')})",
        "      x509_svid_ttl: 3600 -> 600",
        "  - spiffe://example.org/batch parent=spiffe://example.org/agent/test selectors=unix:uid:1000 "
        f"(entry {batch_id})",
    ]


def test_created_entries_carry_the_prefix_and_only_prefixed_entries_are_owned() -> None:
    server = _applied()
    assert all(e.id.startswith(DEFAULT_ENTRY_ID_PREFIX) for e in server.list_entries())
    custom = parse_workloads(BASE.replace("workloads:\n", "entry_id_prefix: team-b.\nworkloads:\n", 1))
    # Another prefix owns nothing here: the same identities are someone else's entries.
    with pytest.raises(RegistrationError, match=re.escape("ID does not start with 'team-b.'")):
        plan(custom, server)


def test_hint_set_on_the_server_survives_apply_when_the_file_sets_none() -> None:
    server = _applied()
    web_id = _id_of(server, "spiffe://example.org/ns/shop/sa/web")
    server.batch_update_entries([replace(server.get(web_id), hint="internal")], {"hint"})
    server.writes.clear()
    result = plan(_file(), server)
    assert not result.has_changes
    apply(result, server)
    assert (server.writes, server.get(web_id).hint) == ([], "internal")


def test_hint_in_the_file_is_kept_equal_on_the_server() -> None:
    server = _applied()
    web_id = _id_of(server, "spiffe://example.org/ns/shop/sa/web")
    hinted = BASE.replace('["k8s:ns:shop", "k8s:sa:web"]\n', '["k8s:ns:shop", "k8s:sa:web"]\n    hint: external\n')
    (update,) = plan(_file(hinted), server).updates
    assert (update.entry.id, update.changes) == (web_id, (FieldChange("hint", "", "external"),))


def test_legacy_hint_entries_are_replaced_with_prefixed_ones_and_stale_ones_deleted() -> None:
    legacy_batch = Entry("spiffe://example.org/batch", PARENT, (Selector("unix", "uid:1000"),), 3600, 300)
    legacy_gone = Entry("spiffe://example.org/gone", PARENT, (Selector("unix", "uid:9"),), 60, 60)
    server = InMemoryEntryServer(
        [
            replace(legacy_batch, id="old-1", hint="spiffe-broker"),
            replace(legacy_gone, id="old-2", hint="spiffe-broker"),
        ]
    )
    result = plan(_file(), server)
    assert [(r.workload, r.old.id, r.entry.hint) for r in result.replaces] == [("batch", "old-1", "")]
    assert [d.entry.id for d in result.deletes] == ["old-2"]
    assert "1 to replace (migrating from hint 'spiffe-broker')" in render_plan(result)
    applied = apply(result, server)
    assert set(applied.deleted) == {"old-1", "old-2"}
    # The legacy entry goes before its replacement is created: SPIRE refuses two similar entries.
    kinds = [kind for kind, _ in server.writes]
    assert kinds.index("delete") < kinds.index("create", 2)
    batch = next(e for e in server.list_entries() if e.spiffe_id == "spiffe://example.org/batch")
    assert (batch.id.startswith(DEFAULT_ENTRY_ID_PREFIX), batch.hint) == (True, "")
    assert not plan(_file(), server).has_changes


def test_node_alias_becomes_an_entry_parented_to_the_server() -> None:
    text = BASE.replace(
        "defaults: {parent_id: spiffe://example.org/agent/test,",
        "node_aliases:\n  - {name: demo, spiffe_id: spiffe://example.org/cluster/demo,"
        ' selectors: ["k8s_psat:cluster:demo"]}\n'
        "defaults: {parent_id: spiffe://example.org/cluster/demo,",
    )
    server = InMemoryEntryServer()
    result = plan(_file(text), server)
    alias = result.creates[0]
    assert (alias.workload, alias.entry.parent_id, alias.entry.selectors) == (
        "node alias demo",
        "spiffe://example.org/spire/server",
        (Selector("k8s_psat", "cluster:demo"),),
    )
    assert (alias.entry.x509_svid_ttl, alias.entry.jwt_svid_ttl) == (0, 0)
    assert result.warnings == ()
    apply(result, server)
    assert not plan(_file(text), server).has_changes


def test_parent_that_is_no_alias_and_no_known_agent_is_warned_about() -> None:
    text = BASE.replace("spiffe://example.org/agent/test", "spiffe://example.org/spire/agent/k8s_psat/demo/node-1")
    server = InMemoryEntryServer()
    result = plan(_file(text), server)
    assert len(result.warnings) == 3
    assert (
        "workload 'web': parent_id spiffe://example.org/spire/agent/k8s_psat/demo/node-1 is neither"
        in (result.warnings[0])
    )
    assert server.agent_lookups == ["spiffe://example.org/spire/agent/k8s_psat/demo/node-1"]
    known = InMemoryEntryServer(agents=["spiffe://example.org/spire/agent/k8s_psat/demo/node-1"])
    assert plan(_file(text), known).warnings == ()


def test_parent_that_is_a_node_alias_on_the_server_is_not_warned_about() -> None:
    token_alias = Entry(
        PARENT,
        "spiffe://example.org/spire/agent/join_token/t",
        (Selector("spiffe_id", "spiffe://example.org/spire/agent/join_token/t"),),
    )
    server = InMemoryEntryServer([token_alias])
    assert plan(_file(), server).warnings == ()
    assert server.agent_lookups == []  # not an agent path: never looked up
    assert len(plan(_file(), InMemoryEntryServer()).warnings) == 3


def test_node_alias_of_one_agent_is_parented_to_it_and_an_unknown_agent_is_warned_about() -> None:
    agent = "spiffe://example.org/spire/agent/join_token/abc"
    text = BASE.replace(
        "defaults: {parent_id: spiffe://example.org/agent/test,",
        f'node_aliases:\n  - {{name: one, spiffe_id: spiffe://example.org/node/one, parent_id: "{agent}",'
        f' selectors: ["spiffe_id:{agent}"]}}\n'
        "defaults: {parent_id: spiffe://example.org/node/one,",
    )
    result = plan(_file(text), InMemoryEntryServer())
    assert result.creates[0].entry.parent_id == agent
    assert [w.split(":")[0] for w in result.warnings] == ["node alias one"]
    assert plan(_file(text), InMemoryEntryServer(agents=[agent])).warnings == ()


SPIRE_ID = "deadbeef-0f00-4a5b-9c8d-0123456789ab"  # the kind of ID SPIRE assigns to entries created without one


@pytest.mark.parametrize("prefix", ["", "d", "de", "deadbeef-", SPIRE_ID])
def test_an_entry_whose_id_is_a_bare_spire_uuid_is_never_owned(prefix: str) -> None:
    assert not Entry("spiffe://example.org/other", PARENT, (Selector("unix", "uid:1"),), id=SPIRE_ID).owned_by(prefix)


def test_plan_never_deletes_a_spire_assigned_entry_even_with_a_prefix_that_matches_it() -> None:
    server = InMemoryEntryServer()
    server.batch_create_entries(
        [Entry("spiffe://example.org/other", PARENT, (Selector("unix", "uid:1"),), id=SPIRE_ID)]
    )
    result = plan(replace(_file(), entry_id_prefix="de"), server)  # a prefix the loader refuses, forced here
    assert result.deletes == ()
