"""The client registry contract (broker.tokens.clients.ClientRegistryStore) on memory, a SQLite file and a real
PostgreSQL: add, get, list, disable, remove, the refusals, the stored times, and the ``clients`` change topic."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from broker.errors import StoreConflictError
from broker.events import Change
from broker.events.topics import CLIENTS
from broker.store import Store
from broker.tokens.clients import RegisteredClient
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0
from tests.unit.tokens.client_registry_fake import LEGACY, ec_jwk, inline_client

URI = "https://keys.example.com/payroll/jwks.json"


def uri_client(client_id: str = "payroll") -> RegisteredClient:
    return RegisteredClient(client_id, "spiffe://example.org/legacy/payroll", jwks_uri=URI,
                            algorithms=("ES384", "PS256"), max_assertion_lifetime=300)  # fmt: skip


async def test_add_gives_back_the_stored_record_and_get_reads_it_with_its_jwks(store: Store) -> None:
    client = inline_client("billing", "k1", "k2")
    added = await store.clients.add(client, at=T0)
    assert added == replace(client, created_at=T0, updated_at=T0)
    assert added.jwks == client.jwks  # jwks does not take part in ==: compare it on its own
    got = await store.clients.get("billing")
    assert got == added and got is not None and got.jwks == client.jwks
    assert got.created_at is not None and got.created_at.utcoffset() == timedelta(0)
    assert await store.clients.get("nobody") is None


async def test_a_jwks_uri_client_comes_back_as_given(store: Store) -> None:
    client = uri_client()
    got = await store.clients.add(client, at=T0)
    assert got == replace(client, created_at=T0, updated_at=T0) and got.jwks is None
    assert await store.clients.get("payroll") == got


async def test_the_store_stamps_the_times_whatever_the_client_carried(store: Store) -> None:
    carried = replace(inline_client(), created_at=T0 - timedelta(days=9), updated_at=T0 - timedelta(days=9))
    other_zone = T0.astimezone(timezone(timedelta(hours=5)))
    added = await store.clients.add(carried, at=other_zone)
    assert (added.created_at, added.updated_at) == (T0, T0)
    before = datetime.now(UTC)
    now = await store.clients.add(inline_client("payroll"))
    assert now.created_at is not None and before - timedelta(seconds=1) <= now.created_at <= datetime.now(UTC)


async def test_list_all_is_ordered_by_client_id(store: Store) -> None:
    for client_id in ["payroll", "Zeta", "billing", "a-b", "a_b"]:
        await store.clients.add(inline_client(client_id), at=T0)
    assert [c.client_id for c in await store.clients.list_all()] == ["Zeta", "a-b", "a_b", "billing", "payroll"]


async def test_a_taken_client_id_is_a_conflict_and_the_first_registration_stays(store: Store) -> None:
    first = await store.clients.add(inline_client("billing"), at=T0)
    with pytest.raises(StoreConflictError, match="'billing' is registered already"):
        await store.clients.add(uri_client("billing"), at=T0 + timedelta(hours=1))
    assert await store.clients.list_all() == (first,)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (RegisteredClient("bad id", LEGACY, jwks_uri=URI), "client_id"),
        (RegisteredClient("billing", "https://example.org/x", jwks_uri=URI), "spiffe_id"),
        (RegisteredClient("billing", LEGACY), "exactly one of jwks and jwks_uri"),
        (RegisteredClient("billing", LEGACY, jwks={"keys": [{**ec_jwk(), "d": "c2VjcmV0"}]}), "public keys only"),
        (RegisteredClient("billing", LEGACY, jwks_uri="http://keys.example.com/"), "https"),
        (RegisteredClient("billing", LEGACY, jwks_uri=URI, algorithms=("HS256",)), "algorithms"),
        (RegisteredClient("billing", LEGACY, jwks_uri=URI, max_assertion_lifetime=301), "max_assertion_lifetime"),
    ],
    ids=["client-id", "spiffe-id", "no-keys", "private-key", "http-uri", "hmac", "lifetime"],
)
async def test_an_invalid_client_is_refused_before_anything_is_written(
    store: Store, client: RegisteredClient, message: str
) -> None:
    subscription = store.changes.subscribe(CLIENTS)
    start = await asyncio.wait_for(anext(subscription), 2)
    with pytest.raises(ValueError, match=message) as caught:
        await store.clients.add(client, at=T0)
    assert "c2VjcmV0" not in str(caught.value)
    assert await store.clients.list_all() == ()
    assert await store.changes.publish(CLIENTS) == start.version + 1  # nothing was bumped


async def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.clients.add(inline_client(), at=T0.replace(tzinfo=None))
    await store.clients.add(inline_client(), at=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.clients.set_disabled("billing", True, at=T0.replace(tzinfo=None))
    assert await store.clients.list_all() == (replace(inline_client(), created_at=T0, updated_at=T0),)


async def test_disable_and_enable_stamp_updated_at_and_keep_the_rest(store: Store) -> None:
    added = await store.clients.add(inline_client(), at=T0)
    later = T0 + timedelta(hours=1)
    disabled = await store.clients.set_disabled("billing", True, at=later)
    assert disabled == replace(added, disabled=True, updated_at=later)
    assert disabled is not None and disabled.jwks == added.jwks
    assert await store.clients.get("billing") == disabled
    enabled = await store.clients.set_disabled("billing", False, at=later + timedelta(hours=1))
    assert enabled == replace(added, updated_at=later + timedelta(hours=1))
    assert await store.clients.set_disabled("nobody", True, at=later) is None


async def test_remove_forgets_the_client_once(store: Store) -> None:
    await store.clients.add(inline_client(), at=T0)
    assert await store.clients.remove("billing")
    assert await store.clients.get("billing") is None and await store.clients.list_all() == ()
    assert not await store.clients.remove("billing")
    await store.clients.add(inline_client(), at=T0)  # the id is free again


async def test_every_change_bumps_the_clients_topic_seen_from_another_handle(open_replica: OpenReplica) -> None:
    writer, follower = await open_replica(), await open_replica()
    subscription = follower.changes.subscribe(CLIENTS)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(CLIENTS, 0, resync=True)
    await writer.clients.add(inline_client(), at=T0)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(CLIENTS, 1)
    assert await follower.clients.get("billing") is not None
    await writer.clients.set_disabled("billing", True, at=T0)
    assert await asyncio.wait_for(anext(subscription), 2) == Change(CLIENTS, 2)
    assert not await writer.clients.remove("nobody")  # no change, no bump
    assert await writer.clients.set_disabled("nobody", True, at=T0) is None
    with pytest.raises(StoreConflictError):
        await writer.clients.add(inline_client(), at=T0)
    assert await writer.clients.remove("billing")
    assert await asyncio.wait_for(anext(subscription), 2) == Change(CLIENTS, 3)
    assert await follower.clients.list_all() == ()


async def test_concurrent_adds_of_one_client_id_across_replicas_register_it_once(open_replica: OpenReplica) -> None:
    first, second = await open_replica(), await open_replica()
    adds = [(first if i % 2 else second).clients.add(inline_client(), at=T0) for i in range(20)]
    results = await asyncio.gather(*adds, return_exceptions=True)
    assert sum(isinstance(r, RegisteredClient) for r in results) == 1
    assert sum(isinstance(r, StoreConflictError) for r in results) == 19
