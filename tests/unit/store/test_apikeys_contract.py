"""The API-key exception store contract (broker.apikeys.store.ApiKeyStore) on memory, a SQLite file and a real
PostgreSQL: add, get, list, the compare-and-set update, final revocation, rotation, re-wrap, aggregated uses,
the refusals (nothing written), the ``apikeys`` change topic, and a reopen."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest

from broker.apikeys.model import ApiKeyException, Delivery, Presentation, SealedVersion, State, Target, UseRecord
from broker.errors import StoreConflictError
from broker.events import Change
from broker.events.revocations import SubjectPattern
from broker.events.topics import APIKEYS
from broker.store import Store
from tests.unit.store.apikey_helpers import KEK, WEB, exception, sealed, use
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

HOUR = timedelta(hours=1)
T1 = T0 + HOUR
T2 = T0 + 2 * HOUR


async def add(store: Store, name: str = "stripe-payments", **changes: object) -> ApiKeyException:
    return await store.apikeys.add(exception(name, **changes), sealed(name), KEK, at=T0)


async def bumps_since(store: Store, start: int) -> int:
    """How many times ``apikeys`` was bumped since ``start`` (publishing once more to read the counter)."""
    return await store.changes.publish(APIKEYS) - start - 1


async def apikeys_version(store: Store) -> int:
    subscription = store.changes.subscribe(APIKEYS)
    try:
        return (await asyncio.wait_for(anext(subscription), 2)).version
    finally:
        subscription.close()


async def test_add_stores_revision_1_and_version_1_and_get_reads_it_back(store: Store) -> None:
    record = exception()
    added = await store.apikeys.add(record, sealed("stripe-payments"), KEK, at=T0)
    assert added == replace(record, revision=1, current_version=1, created_at=T0, updated_at=T0)
    assert await store.apikeys.get("stripe-payments") == added
    assert await store.apikeys.get("nobody") is None
    assert await store.apikeys.versions("stripe-payments") == (
        SealedVersion("stripe-payments", 1, sealed("stripe-payments"), KEK, T0),
    )
    assert await store.apikeys.versions("nobody") == ()


async def test_every_field_comes_back_as_given_with_its_times_in_utc(store: Store) -> None:
    zone = timezone(timedelta(hours=-7))
    record = exception(
        "partner-feed",
        target=Target("*.partner.example.com", port=8443, path_prefix="/feed/", wildcard_host=True),
        justification="Le partenaire n'accepte qu'une clé statique — ticket ouvert",
        expires_at=(T0 + timedelta(days=10, microseconds=7)).astimezone(zone),
        review_interval=timedelta(days=7, seconds=5, microseconds=3),
        allowed=(SubjectPattern.parse(WEB), SubjectPattern.parse("spiffe://example.org/ns/batch/*")),
        presentation=Presentation("query", "api_key"),
        delivery=Delivery.REVEAL,
        state=State.SUSPENDED,
        state_reason="owner on leave",
        last_review_at=T0.astimezone(zone),
        last_review_by="alice@example.org",
    )
    added = await store.apikeys.add(record, sealed("partner-feed"), KEK, at=T0.astimezone(zone))
    got = await store.apikeys.get("partner-feed")
    assert got == added == replace(record, revision=1, current_version=1, created_at=T0, updated_at=T0)
    assert got is not None and got.expires_at.utcoffset() == timedelta(0) and got.last_review_at is not None
    assert got.last_review_at.utcoffset() == timedelta(0) and got.created_at == T0


async def test_the_store_stamps_revision_version_and_times_whatever_the_record_carried(store: Store) -> None:
    carried = exception(revision=9, current_version=4, created_at=T0 - HOUR, updated_at=T0 - HOUR)
    added = await store.apikeys.add(carried, sealed("stripe-payments"), KEK, at=T1)
    assert (added.revision, added.current_version, added.created_at, added.updated_at) == (1, 1, T1, T1)


async def test_list_all_is_ordered_by_name_with_revoked_ones_included(store: Store) -> None:
    for name in ["zeta", "a-b", "a1", "b", "a"]:
        await add(store, name)
    revoked = await store.apikeys.update(replace(exception("b", revision=1), state=State.REVOKED), at=T1)
    listed = await store.apikeys.list_all()
    assert [r.name for r in listed] == ["a", "a-b", "a1", "b", "zeta"]
    assert revoked in listed


async def test_a_taken_name_is_a_conflict_even_once_revoked_and_nothing_is_written(store: Store) -> None:
    first = await add(store)
    start = await apikeys_version(store)
    with pytest.raises(StoreConflictError, match="names are never reused"):
        await store.apikeys.add(exception(owner="other-team"), b"other", "kek-2", at=T1)
    await store.apikeys.update(replace(first, state=State.REVOKED), at=T1)
    with pytest.raises(StoreConflictError, match="'stripe-payments' exists"):
        await store.apikeys.add(exception(), b"other", "kek-2", at=T2)
    assert await bumps_since(store, start) == 1  # the revocation only
    assert [(v.version, v.sealed) for v in await store.apikeys.versions("stripe-payments")] == [
        (1, sealed("stripe-payments"))
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Stripe_Payments"}, "DNS label"),
        ({"target": Target("api.stripe.com", scheme="http")}, "https"),
        ({"target": Target("*.stripe.com")}, "exact lower-case DNS name"),
        ({"allowed": ()}, "at least one SPIFFE ID"),
        ({"justification": "because"}, "justification"),
        ({"presentation": Presentation("header", "Host")}, "hop-by-hop"),
        ({"presentation": Presentation("header", "X-Key", "no slot")}, "exactly once"),
        ({"expires_at": T0.replace(tzinfo=None) + timedelta(days=9)}, "timezone-aware"),
        ({"expires_at": T0}, "after created_at"),
        ({"review_interval": timedelta(hours=1)}, "at least one day"),
    ],
    ids=str.split(
        "name http wildcard-not-opted-in no-allowed justification reserved-header template naive-expiry "
        "expires-at-creation review-interval"
    ),
)
async def test_an_invalid_record_is_refused_before_anything_is_written(
    store: Store, changes: dict[str, Any], message: str
) -> None:
    start = await apikeys_version(store)
    with pytest.raises(ValueError, match=message):
        await store.apikeys.add(exception(**changes), sealed("x"), KEK, at=T0)
    assert await store.apikeys.list_all() == () and await store.apikeys.all_versions() == ()
    assert await bumps_since(store, start) == 0


async def test_a_naive_time_is_refused_everywhere_before_anything_is_written(store: Store) -> None:
    naive = T1.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.apikeys.add(exception(), sealed("x"), KEK, at=naive)
    added = await add(store)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.apikeys.update(added, at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.apikeys.rotate(added.name, 1, b"v2", KEK, at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.apikeys.record_uses([use(added.name), replace(use(added.name), last_used_at=naive)])
    assert await store.apikeys.list_all() == (added,)
    assert len(await store.apikeys.all_versions()) == 1 and await store.apikeys.uses() == ()


async def test_update_is_a_compare_and_set_on_revision_and_keeps_name_creation_and_version(store: Store) -> None:
    added = await add(store)
    change = replace(added, owner="team-billing", current_version=7, created_at=T0 - HOUR, updated_at=None)
    updated = await store.apikeys.update(change, at=T1)
    assert updated == replace(added, owner="team-billing", revision=2, updated_at=T1)
    assert await store.apikeys.get(added.name) == updated
    with pytest.raises(StoreConflictError, match="changed meanwhile"):
        await store.apikeys.update(replace(added, owner="team-lost-update"), at=T2)  # still at revision 1
    assert await store.apikeys.get(added.name) == updated


async def test_update_of_an_unknown_exception_is_a_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError, match="no exception named 'nobody'"):
        await store.apikeys.update(exception("nobody", revision=1), at=T1)
    with pytest.raises(LookupError, match="no exception named 'nobody'"):
        await store.apikeys.rotate("nobody", 1, b"v2", KEK, at=T1)
    assert await store.apikeys.list_all() == ()


async def test_an_invalid_update_is_a_value_error_even_when_stale_and_changes_nothing(store: Store) -> None:
    added = await add(store)
    with pytest.raises(ValueError, match="contact"):
        await store.apikeys.update(replace(added, contact="nobody", revision=5), at=T1)
    with pytest.raises(ValueError, match="after created_at"):  # checked against the stored creation time
        await store.apikeys.update(replace(added, expires_at=T0 - HOUR, created_at=None), at=T1)
    assert await store.apikeys.get(added.name) == added


async def test_revocation_is_final_no_update_or_rotation_after_it(store: Store) -> None:
    added = await add(store)
    revoked = await store.apikeys.update(replace(added, state=State.REVOKED, state_reason="leaked"), at=T1)
    assert (revoked.state, revoked.revision) == (State.REVOKED, 2)
    with pytest.raises(StoreConflictError, match="or is revoked"):
        await store.apikeys.update(replace(revoked, state=State.ACTIVE), at=T2)
    with pytest.raises(StoreConflictError, match="or is revoked"):
        await store.apikeys.rotate(added.name, revoked.revision, b"v2", KEK, at=T2)
    assert await store.apikeys.get(added.name) == revoked
    assert len(await store.apikeys.versions(added.name)) == 1


async def test_a_suspended_exception_can_be_rotated_and_resumed(store: Store) -> None:
    suspended = await store.apikeys.update(replace(await add(store), state=State.SUSPENDED), at=T1)
    record, _ = await store.apikeys.rotate(suspended.name, suspended.revision, b"v2", KEK, at=T1)
    resumed = await store.apikeys.update(replace(record, state=State.ACTIVE), at=T2)
    assert (resumed.state, resumed.revision, resumed.current_version) == (State.ACTIVE, 4, 2)


async def test_rotate_adds_the_next_version_and_supersedes_the_previous_one(store: Store) -> None:
    added = await add(store)
    record, version = await store.apikeys.rotate(added.name, 1, b"sealed-2", "kek-2", at=T1)
    assert record == replace(added, revision=2, current_version=2, updated_at=T1)
    assert version == SealedVersion(added.name, 2, b"sealed-2", "kek-2", T1)
    record, _ = await store.apikeys.rotate(added.name, 2, b"sealed-3", "kek-2", at=T2)
    assert await store.apikeys.get(added.name) == record
    assert (record.revision, record.current_version, record.created_at) == (3, 3, T0)
    assert await store.apikeys.versions(added.name) == (
        SealedVersion(added.name, 1, sealed(added.name), KEK, T0, superseded_at=T1),
        SealedVersion(added.name, 2, b"sealed-2", "kek-2", T1, superseded_at=T2),
        SealedVersion(added.name, 3, b"sealed-3", "kek-2", T2),
    )


async def test_a_stale_rotation_is_a_conflict_and_writes_no_version(store: Store) -> None:
    added = await add(store)
    await store.apikeys.rotate(added.name, 1, b"sealed-2", KEK, at=T1)
    with pytest.raises(StoreConflictError, match="changed meanwhile"):
        await store.apikeys.rotate(added.name, 1, b"sealed-lost", KEK, at=T2)
    versions = await store.apikeys.versions(added.name)
    assert [v.version for v in versions] == [1, 2] and versions[-1].superseded_at is None


async def test_all_versions_lists_every_version_by_name_then_version(store: Store) -> None:
    for name in ["b", "a"]:
        added = await add(store, name)
        await store.apikeys.rotate(name, added.revision, sealed(name, 2), KEK, at=T1)
    assert [(v.name, v.version) for v in await store.apikeys.all_versions()] == [
        ("a", 1), ("a", 2), ("b", 1), ("b", 2)
    ]  # fmt: skip


async def test_rewrap_is_a_compare_and_set_on_the_old_kek_id_and_changes_nothing_else(store: Store) -> None:
    added = await add(store)
    await store.apikeys.rotate(added.name, 1, sealed(added.name, 2), KEK, at=T1)
    record = await store.apikeys.get(added.name)
    assert await store.apikeys.rewrap(added.name, 1, KEK, b"rewrapped-1", "kek-2")
    assert not await store.apikeys.rewrap(added.name, 1, KEK, b"rewrapped-again", "kek-3")  # moved on meanwhile
    assert not await store.apikeys.rewrap(added.name, 9, KEK, b"x", "kek-2")
    assert not await store.apikeys.rewrap("nobody", 1, KEK, b"x", "kek-2")
    assert await store.apikeys.versions(added.name) == (
        SealedVersion(added.name, 1, b"rewrapped-1", "kek-2", T0, superseded_at=T1),
        SealedVersion(added.name, 2, sealed(added.name, 2), KEK, T1),
    )
    assert await store.apikeys.get(added.name) == record  # no revision bump


async def test_record_uses_adds_counts_keeps_the_latest_time_and_drops_unknown_names(store: Store) -> None:
    await add(store, "b")
    await add(store, "a")
    await store.apikeys.record_uses([use("b", 2, minutes=5), use("a", 1, minutes=1), use("ghost", 7)])
    await store.apikeys.record_uses([use("b", 3, minutes=2), use("b", 1, minutes=9, version=2)])
    await store.apikeys.record_uses([use("b", 1, minutes=1), use("a", 4, minutes=3, spiffe_id=WEB + "-2")])
    assert await store.apikeys.uses() == (
        use("a", 1, minutes=1),
        use("a", 4, minutes=3, spiffe_id=WEB + "-2"),
        use("b", 6, minutes=5),  # 2 + 3 + 1, the latest of 5, 2, 1 minutes
        use("b", 1, minutes=9, version=2),
    )
    assert await store.apikeys.uses("b") == (use("b", 6, minutes=5), use("b", 1, minutes=9, version=2))
    assert await store.apikeys.uses("ghost") == ()


async def test_record_uses_adds_rows_repeated_in_one_batch_and_keeps_times_in_utc(store: Store) -> None:
    await add(store)
    zone = timezone(timedelta(hours=3))
    late = replace(use("stripe-payments", 2), last_used_at=(T0 + HOUR).astimezone(zone))
    await store.apikeys.record_uses([use("stripe-payments", 1), late, use("stripe-payments", 4)])
    (row,) = await store.apikeys.uses()
    assert row == UseRecord("stripe-payments", WEB, 1, "https://api.stripe.com:443/v1/", 7, T0 + HOUR)
    assert row.last_used_at.astimezone(UTC) == row.last_used_at and row.last_used_at.utcoffset() == timedelta(0)


async def test_a_use_row_counting_no_use_refuses_the_whole_batch(store: Store) -> None:
    await add(store)
    with pytest.raises(ValueError, match="at least one use"):
        await store.apikeys.record_uses([use("stripe-payments", 2), use("stripe-payments", 0, version=2)])
    await store.apikeys.record_uses([])
    assert await store.apikeys.uses() == ()


async def test_each_change_bumps_the_apikeys_topic_once_seen_from_another_handle(open_replica: OpenReplica) -> None:
    writer, follower = await open_replica(), await open_replica()
    subscription = follower.changes.subscribe(APIKEYS)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(APIKEYS, 0, resync=True)
    added = await add(writer)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(APIKEYS, 1)
    assert await follower.apikeys.get(added.name) == added
    updated = await writer.apikeys.update(replace(added, ticket="SEC-2000"), at=T1)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(APIKEYS, 2)
    await writer.apikeys.rotate(added.name, updated.revision, b"v2", KEK, at=T2)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(APIKEYS, 3)


async def test_rewrap_record_uses_and_refusals_bump_nothing(store: Store) -> None:
    added = await add(store)
    start = await apikeys_version(store)
    assert await store.apikeys.rewrap(added.name, 1, KEK, b"rewrapped", "kek-2")
    await store.apikeys.record_uses([use(added.name, 3)])
    with pytest.raises(StoreConflictError):
        await store.apikeys.update(replace(added, revision=7), at=T1)
    with pytest.raises(StoreConflictError):
        await add(store)
    with pytest.raises(LookupError):
        await store.apikeys.rotate("nobody", 1, b"v2", KEK, at=T1)
    assert await bumps_since(store, start) == 0


async def test_everything_survives_a_reopen(open_replica: OpenReplica) -> None:
    first = await open_replica()
    added = await add(first)
    rotated, _ = await first.apikeys.rotate(added.name, 1, b"sealed-2", "kek-2", at=T1)
    await first.apikeys.record_uses([use(added.name, 5)])
    versions, uses = await first.apikeys.versions(added.name), await first.apikeys.uses()
    await first.close()
    reopened = await open_replica()
    assert await reopened.apikeys.list_all() == (rotated,)
    assert await reopened.apikeys.versions(added.name) == versions
    assert await reopened.apikeys.uses() == uses == (use(added.name, 5),)


async def test_concurrent_updates_at_one_revision_across_replicas_succeed_once(open_replica: OpenReplica) -> None:
    first, second = await open_replica(), await open_replica()
    added = await add(first)
    changes = [(first if i % 2 else second).apikeys.update(replace(added, ticket=f"SEC-{i}"), at=T1) for i in range(10)]
    results = await asyncio.gather(*changes, return_exceptions=True)
    assert sum(isinstance(r, ApiKeyException) for r in results) == 1
    assert sum(isinstance(r, StoreConflictError) for r in results) == 9
    stored = await second.apikeys.get(added.name)
    assert stored is not None and stored.revision == 2 and stored in results


async def test_concurrent_use_reports_across_replicas_add_up(open_replica: OpenReplica) -> None:
    first, second = await open_replica(), await open_replica()
    await add(first, "a")
    await add(first, "b")
    batches = [[use("a", 1, minutes=i), use("b", 2, minutes=-i)] for i in range(10)]
    reports = [(first if i % 2 else second).apikeys.record_uses(batch[:: 1 if i % 2 else -1])
               for i, batch in enumerate(batches)]  # fmt: skip
    await asyncio.gather(*reports)
    assert await second.apikeys.uses() == (use("a", 10, minutes=9), use("b", 20, minutes=0))
