"""The admin ports over the real keyring, ledger and audit journal (memory twin of the store)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.admin.adapters import JournalAuditReader, KeyringAdmin, StoreStatusInfo, TrailAdminAudit
from broker.admin.errors import AdminConflictError, KidAlreadyRevokedError, KidNotFoundError
from broker.admin.ports import AuditQuery
from broker.audit.trail import AuditTrail
from broker.errors import StoreUnavailableError
from broker.events.revocations import KeyRevoked, LogEntry, RevocationEvent
from broker.identity.spiffeid import SpiffeId
from broker.store import latest_version, open_store
from broker.store.memory import MemoryStore
from broker.store.url import StoreUrl
from broker.testing import ManualClock
from broker.tokens.keyring import DEFAULT_MAX_UNCONFIRMED
from broker.tokens.keystore import KeyState
from broker.tokens.ledger import LedgerEntry
from tests.unit.tokens.keyring_helpers import PUBLISH_LEAD, RETIRE_AFTER, open_keyring
from tests.unit.tokens.quarantine_helpers import LiveLedger
from tests.unit.tokens.quarantine_helpers import service as quarantine_service

ADMIN = "spiffe://example.org/ops/admin"


async def _parts(clock: ManualClock) -> tuple[MemoryStore, KeyringAdmin, AuditTrail]:
    store = MemoryStore(latest_version())
    keyring = await open_keyring(store.keyring, clock, blast_radius=store.ledger)
    trail = AuditTrail(store.audit)
    return store, KeyringAdmin(keyring, trail), trail


async def test_revoke_reports_the_ledger_blast_radius_and_records_key_revoked() -> None:
    clock = ManualClock(1_800_000_000)
    store, admin, _ = await _parts(clock)
    active = next(k.kid for k in await admin.list_keys() if k.state is KeyState.ACTIVE)
    now = datetime.fromtimestamp(clock(), UTC)
    await store.ledger.record(
        [
            LedgerEntry(
                f"jti-{n}",
                active,
                "spiffe://example.org/app",
                ("api",),
                (),
                "x5t#S256=abc",
                now,
                now + timedelta(seconds=300),
            )
            for n in range(3)
        ]
    )
    revocation = await admin.revoke(active)
    assert revocation.revoked_kid == active
    assert revocation.active_kid != active
    assert revocation.blast_radius.live_tokens == 3
    assert revocation.blast_radius.audiences == ("api",)
    last = await store.audit.last()
    assert last is not None and last.event == "key.revoked"
    assert json.loads(last.body)["live_tokens"] == 3


async def test_revoke_of_an_unknown_or_revoked_kid_is_the_admin_error_and_changes_nothing() -> None:
    store, admin, _ = await _parts(ManualClock(1_800_000_000))
    with pytest.raises(KidNotFoundError):
        await admin.revoke("no-such-kid")
    active = next(k.kid for k in await admin.list_keys() if k.state is KeyState.ACTIVE)
    await admin.revoke(active)
    before = [(k.kid, k.state) for k in await store.keyring.keys()]
    with pytest.raises(KidAlreadyRevokedError):
        await admin.revoke(active)
    assert [(k.kid, k.state) for k in await store.keyring.keys()] == before


async def test_rotate_before_the_next_key_was_published_long_enough_is_a_conflict() -> None:
    clock = ManualClock(1_800_000_000)
    store, admin, _ = await _parts(clock)
    with pytest.raises(AdminConflictError):
        await admin.rotate()
    clock.advance(PUBLISH_LEAD + 1)
    rotation = await admin.rotate()
    assert rotation.previous_kid is not None
    last = await store.audit.last()
    assert last is not None and last.event == "key.rotated"
    assert json.loads(last.body)["reason"] == "manual"


async def test_admin_calls_are_journal_records_and_the_reader_filters_them() -> None:
    store, _, trail = await _parts(ManualClock(1_800_000_000))
    audit = TrailAdminAudit(trail)
    await audit.record(ADMIN, "POST", "/admin/v1/keys/rotate", "requested", {"reason": "drill"})
    await audit.record(None, "GET", "/admin/v1/keys", "refused", {"error": "invalid_client", "status": 401})
    reader = JournalAuditReader(store.audit)
    mine = await reader.read(AuditQuery(spiffe_id=SpiffeId.parse(ADMIN)))
    assert [json.loads(r.body)["outcome"] for r in mine] == ["requested"]
    calls = await reader.read(AuditQuery(event="admin.*", limit=10))
    assert len(calls) == 2
    assert json.loads(calls[1].body)["status"] == 401
    assert await reader.read(AuditQuery(after=calls[-1].seq)) == []


async def test_store_status_shows_the_redacted_url_and_versions(tmp_path: object) -> None:
    url = StoreUrl.parse("memory:")
    store = await open_store(url)
    try:
        status = await StoreStatusInfo(store, url).status()
    finally:
        await store.close()
    assert (status.engine, status.schema_version, status.latest_version) == ("memory", latest_version(),
                                                                              latest_version())  # fmt: skip


class _BrokenLedger:
    async def blast_radius(self, kid: str, now: datetime) -> object:
        raise StoreUnavailableError("the ledger is down")


async def test_a_ledger_that_does_not_answer_makes_the_blast_radius_unknown_not_zero() -> None:
    clock = ManualClock(1_800_000_000)
    store = MemoryStore(latest_version())
    keyring = await open_keyring(store.keyring, clock, blast_radius=_BrokenLedger())
    admin = KeyringAdmin(keyring, AuditTrail(store.audit))
    active = keyring.active_key().kid
    revocation = await admin.revoke(active)
    assert revocation.blast_radius.live_tokens is None
    assert revocation.blast_radius.error
    last = await store.audit.last()
    assert last is not None and json.loads(last.body)["live_tokens"] is None


async def test_revoke_writes_the_queued_ledger_rows_before_it_counts_the_blast_radius() -> None:
    clock = ManualClock(1_800_000_000)
    store = MemoryStore(latest_version())
    keyring = await open_keyring(store.keyring, clock, blast_radius=store.ledger)
    active = keyring.active_key().kid
    now = datetime.fromtimestamp(clock(), UTC)
    queued = [LedgerEntry("queued", active, "spiffe://example.org/app", ("api",), (), "x5t#S256=abc", now,
                          now + timedelta(seconds=300))]  # fmt: skip

    async def flush() -> None:  # what the recorder's ledger writer does with its queue
        await store.ledger.record(queued)

    admin = KeyringAdmin(keyring, AuditTrail(store.audit), flush_ledger=flush)
    assert (await admin.revoke(active)).blast_radius.live_tokens == 1


async def _feed_parts(clock: ManualClock) -> tuple[MemoryStore, LiveLedger, KeyringAdmin]:
    store, ledger = MemoryStore(latest_version()), LiveLedger()
    keyring = await open_keyring(store.keyring, clock, blast_radius=ledger)
    feed = quarantine_service(store, ledger, clock)
    return store, ledger, KeyringAdmin(keyring, AuditTrail(store.audit), feed=feed)


async def test_revoke_puts_the_kid_on_the_revocation_feed_before_the_keyring_revokes_it() -> None:
    clock = ManualClock(1_800_000_000)
    store, _, admin = await _feed_parts(clock)
    active = next(k.kid for k in await admin.list_keys() if k.state is KeyState.ACTIVE)
    seen: list[list[KeyState]] = []
    append = store.revocations.append

    async def watching(events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        seen.append([r.state for r in await store.keyring.keys() if r.kid == active])
        return await append(events)

    store.revocations.append = watching  # type: ignore[method-assign]
    await admin.revoke(active)
    entries = (await store.revocations.read(0)).entries
    now = datetime.fromtimestamp(clock(), UTC)
    grace = timedelta(seconds=DEFAULT_MAX_UNCONFIRMED)
    assert [e.event for e in entries] == [KeyRevoked(active, now + timedelta(seconds=RETIRE_AFTER) + grace)]
    assert seen == [[KeyState.ACTIVE]]  # published while it was still active: fail closed


async def test_an_unknown_or_already_revoked_kid_is_not_published() -> None:
    store, _, admin = await _feed_parts(ManualClock(1_800_000_000))
    with pytest.raises(KidNotFoundError):
        await admin.revoke("no-such-kid")
    active = next(k.kid for k in await admin.list_keys() if k.state is KeyState.ACTIVE)
    await admin.revoke(active)
    with pytest.raises(KidAlreadyRevokedError):
        await admin.revoke(active)
    assert [type(e.event) for e in (await store.revocations.read(0)).entries] == [KeyRevoked]
