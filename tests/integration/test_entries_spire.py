"""Registration as code against a real SPIRE Server: apply converges, edits touch exactly what changed,
and entries the broker does not manage are never touched."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from spire import AGENT_ID, TRUST_DOMAIN, SpireDeployment

from broker.registration import (
    MANAGED_HINT,
    EntryClient,
    RegistrationError,
    WorkloadsFile,
    apply,
    parse_workloads,
    plan,
)

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
    """SPIFFE ID -> (entry id, revision number) of the managed entries."""
    return {e.spiffe_id: (e.id, e.revision_number) for e in client.list_entries() if e.hint == MANAGED_HINT}


def test_apply_twice_second_plan_reports_no_changes(spire: SpireDeployment, server: EntryClient) -> None:
    first = plan(_file(BASE), server)
    assert [c.workload for c in first.creates] == ["self", "web", "batch"]
    created = apply(first, server)
    assert len(created.created) == 3
    second = plan(_file(BASE), server)
    assert not second.has_changes
    assert second.unchanged == ("self", "web", "batch")
    # Read back through the CLI, independently of our proto mapping.
    web = spire.show_entry(_managed(server)[f"spiffe://{TRUST_DOMAIN}/reg/web"][0])
    assert (web["hint"], web["x509_svid_ttl"], web["jwt_svid_ttl"], web["dns_names"]) == (
        MANAGED_HINT,
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
