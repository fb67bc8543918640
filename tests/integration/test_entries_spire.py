"""Registration as code against a real SPIRE Server: apply converges, edits touch exactly what changed,
entries the broker does not own (no ID prefix) are never touched, operators' hints survive, entries from the
old hint marker are migrated, and a node alias makes entries reachable by a real agent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.registration import (
    DEFAULT_ENTRY_ID_PREFIX,
    LEGACY_HINT,
    EntryClient,
    RegistrationError,
    WorkloadsFile,
    apply,
    load_workloads,
    parse_workloads,
    plan,
)
from tests.integration.spire import AGENT_ID, TRUST_DOMAIN, SpireDeployment

pytestmark = pytest.mark.spire

BASE = f"""\
trust_domain: {TRUST_DOMAIN}
defaults: {{parent_id: "{AGENT_ID}", x509_svid_ttl: 3600, jwt_svid_ttl: 300}}
workloads:
  - name: self
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/self
    selectors: ["unix:uid:{os.getuid()}"]
    jwt_svid_include_jti: true
  - name: web
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/web
    selectors: ["unix:uid:60001", "unix:gid:60001"]
    dns_names: [web.example.org]
  - name: batch
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/batch
    selectors: ["unix:uid:60002"]
    x509_svid_ttl: 600
"""
EMPTY = f"trust_domain: {TRUST_DOMAIN}\nworkloads: []\n"


def _file(text: str) -> WorkloadsFile:
    return parse_workloads(text, source="workloads.yaml")


@pytest.fixture
def server(spire: SpireDeployment) -> Iterator[EntryClient]:
    """The real server's entry API; managed entries are cleared before and after each test."""
    with EntryClient(spire.server_socket) as client:
        apply(plan(_file(EMPTY), client), client)
        try:
            yield client
        finally:
            apply(plan(_file(EMPTY), client), client)


def _managed(client: EntryClient) -> dict[str, tuple[str, int]]:
    """SPIFFE ID -> (entry id, revision number) of the entries the broker owns (ID prefix)."""
    return {
        e.spiffe_id: (e.id, e.revision_number) for e in client.list_entries() if e.owned_by(DEFAULT_ENTRY_ID_PREFIX)
    }


def test_apply_twice_second_plan_reports_no_changes(spire: SpireDeployment, server: EntryClient) -> None:
    first = plan(_file(BASE), server)
    assert [c.workload for c in first.creates] == ["self", "web", "batch"]
    created = apply(first, server)
    assert len(created.created) == 3
    second = plan(_file(BASE), server)
    assert not second.has_changes
    assert second.unchanged == ("self", "web", "batch")
    # Read back through the CLI, independently of our proto mapping.
    web_id = _managed(server)[f"spiffe://{TRUST_DOMAIN}/reg/web"][0]
    assert web_id.startswith(DEFAULT_ENTRY_ID_PREFIX)  # SPIRE kept the client-chosen ID
    web = spire.show_entry(web_id)
    assert (web.get("hint", ""), web["x509_svid_ttl"], web["jwt_svid_ttl"], web["dns_names"]) == (
        "",
        3600,
        300,
        ["web.example.org"],
    )
    # The applied entry for this process's uid is really served by the agent.
    spire.wait_for_entry(f"spiffe://{TRUST_DOMAIN}/reg/self")


def test_edited_ttl_updates_exactly_that_entry(server: EntryClient) -> None:
    apply(plan(_file(BASE), server), server)
    before = _managed(server)
    edited = BASE.replace("    x509_svid_ttl: 600\n", "    x509_svid_ttl: 900\n")
    changes = plan(_file(edited), server)
    assert (changes.creates, changes.deletes) == ((), ())
    assert [(u.workload, [c.name for c in u.changes]) for u in changes.updates] == [("batch", ["x509_svid_ttl"])]
    apply(changes, server)
    after = _managed(server)
    batch = f"spiffe://{TRUST_DOMAIN}/reg/batch"
    assert after[batch][0] == before[batch][0]
    assert after[batch][1] > before[batch][1]
    assert {k: v for k, v in after.items() if k != batch} == {k: v for k, v in before.items() if k != batch}
    assert not plan(_file(edited), server).has_changes


def test_removed_workload_deletes_only_its_entry(server: EntryClient) -> None:
    apply(plan(_file(BASE), server), server)
    before = _managed(server)
    trimmed = BASE[: BASE.index("  - name: batch")]
    changes = plan(_file(trimmed), server)
    assert [d.entry.spiffe_id for d in changes.deletes] == [f"spiffe://{TRUST_DOMAIN}/reg/batch"]
    assert (changes.creates, changes.updates) == ((), ())
    result = apply(changes, server)
    assert result.deleted == (before[f"spiffe://{TRUST_DOMAIN}/reg/batch"][0],)
    del before[f"spiffe://{TRUST_DOMAIN}/reg/batch"]
    assert _managed(server) == before


def test_unmanaged_entry_created_by_cli_is_never_touched(spire: SpireDeployment, server: EntryClient) -> None:
    legacy_id = spire.create_entry(f"spiffe://{TRUST_DOMAIN}/reg/legacy", ["unix:uid:60009"], x509_ttl=120)
    try:
        apply(plan(_file(BASE), server), server)
        everything_removed = plan(_file(EMPTY), server)
        assert legacy_id not in {d.entry.id for d in everything_removed.deletes}
        apply(everything_removed, server)
        assert spire.show_entry(legacy_id)["x509_svid_ttl"] == 120
        claiming = BASE + (
            f'  - name: legacy\n    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/legacy\n    selectors: ["unix:uid:60009"]\n'
        )
        with pytest.raises(RegistrationError, match=f"workload 'legacy': .*entry {legacy_id}.* not managed"):
            plan(_file(claiming), server)
        legacy = spire.show_entry(legacy_id)
        assert (legacy["x509_svid_ttl"], legacy.get("revision_number", "0")) == (120, "0")
    finally:
        spire.delete_entry(legacy_id)


def test_hint_set_by_an_operator_survives_apply(spire: SpireDeployment, server: EntryClient) -> None:
    apply(plan(_file(BASE), server), server)
    web_id = _managed(server)[f"spiffe://{TRUST_DOMAIN}/reg/web"][0]
    (current,) = [e for e in server.list_entries() if e.id == web_id]
    (status,) = server.batch_update_entries([replace(current, hint="operator-choice")], {"hint"})
    assert status.ok, status
    again = plan(_file(BASE), server)
    assert not again.has_changes
    apply(again, server)
    assert spire.show_entry(web_id)["hint"] == "operator-choice"


def test_entry_marked_with_the_old_hint_is_replaced_by_a_prefixed_one(
    spire: SpireDeployment, server: EntryClient
) -> None:
    old_id = spire.create_entry(
        f"spiffe://{TRUST_DOMAIN}/reg/batch", ["unix:uid:60002"], x509_ttl=600, hint=LEGACY_HINT
    )
    changes = plan(_file(BASE), server)
    assert [(r.workload, r.old.id) for r in changes.replaces] == [("batch", old_id)]
    apply(changes, server)
    batch_id = _managed(server)[f"spiffe://{TRUST_DOMAIN}/reg/batch"][0]
    assert batch_id != old_id
    assert spire.show_entry(batch_id).get("hint", "") == ""
    assert old_id not in {e.id for e in server.list_entries()}
    assert not plan(_file(BASE), server).has_changes


def _join_token_agent(server: EntryClient) -> str:
    """The fixture's agent: attested with a join token, so it has no node selectors of its own."""
    (agent_id,) = [agent for agent, _ in server.list_agents() if "/spire/agent/join_token/" in agent]
    return agent_id


def test_node_alias_makes_applied_entries_reachable_and_a_second_apply_changes_nothing(
    spire: SpireDeployment, server: EntryClient
) -> None:
    agent = _join_token_agent(server)
    # Same shape as examples/workloads.yaml; a join_token agent has no node selectors (k8s_psat:cluster:...),
    # so the alias names the agent itself, as `spire-server token generate -spiffeID` does.
    text = f"""\
trust_domain: {TRUST_DOMAIN}
node_aliases:
  - name: test-node
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg-node/test
    parent_id: "{agent}"
    selectors: ["spiffe_id:{agent}"]
defaults: {{parent_id: "spiffe://{TRUST_DOMAIN}/reg-node/test", x509_svid_ttl: 0, jwt_svid_ttl: 0}}
workloads:
  - name: via-alias
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/via-alias
    selectors: ["unix:uid:{os.getuid()}"]
  - name: orphan
    spiffe_id: spiffe://{TRUST_DOMAIN}/reg/orphan
    parent_id: spiffe://{TRUST_DOMAIN}/spire/agent/k8s_psat/nowhere/node
    selectors: ["unix:uid:60003"]
"""
    first = plan(_file(text), server)
    assert [c.workload for c in first.creates] == ["node alias test-node", "via-alias", "orphan"]
    assert [w.split(":")[0] for w in first.warnings] == ["workload 'orphan'"]
    apply(first, server)
    spire.wait_for_entry(f"spiffe://{TRUST_DOMAIN}/reg/via-alias")
    via = spire.show_entry(_managed(server)[f"spiffe://{TRUST_DOMAIN}/reg/via-alias"][0])
    # TTL 0 is stored as 0 and means the server's default when signing (the agent got an SVID above).
    assert (via.get("x509_svid_ttl", 0), via.get("jwt_svid_ttl", 0)) == (0, 0)
    second = plan(_file(text), server)
    assert not second.has_changes
    assert second.unchanged == ("node alias test-node", "via-alias", "orphan")


def test_example_file_applies_cleanly_and_converges(server: EntryClient) -> None:
    example = load_workloads(Path(__file__).parents[2] / "examples" / "workloads.yaml")
    first = plan(example, server)
    assert first.warnings == ()  # every parent is the file's own node alias
    assert [c.workload for c in first.creates] == ["node alias demo-cluster", "spiffe-broker", "web", "demo-api"]
    apply(first, server)
    alias = next(e for e in server.list_entries() if e.spiffe_id == str(example.node_aliases[0].spiffe_id))
    assert (alias.parent_id, [str(s) for s in alias.selectors]) == (
        f"spiffe://{TRUST_DOMAIN}/spire/server",
        ["k8s_psat:cluster:demo-cluster"],
    )
    assert not plan(example, server).has_changes
