"""The client key cache over the guarded fetch and a real HTTPS server: cached per ``max-age`` within bounds, the
last good set served for a while when the URI fails, early refetches for an unknown ``kid`` rate-limited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.server.client_keys import (
    ClientKeyFetcher,
    ClientKeysRefusedError,
    ClientKeysUnavailableError,
    cache_lifetime,
)
from broker.server.jwks_fetch import GuardedJwksFetch
from broker.testing import ManualClock
from tests.unit.server.jwks_server import JwksServer, Resolver, serve_jwks, uri_client
from tests.unit.tokens.client_registry_fake import ec_jwk, inline_client


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[JwksServer]:
    async for running in serve_jwks(tmp_path):
        yield running


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def fetcher(server: JwksServer, clock: ManualClock) -> ClientKeyFetcher:
    guard = GuardedJwksFetch(allowed_networks=("127.0.0.1/32",), ca_file=str(server.ca_file), resolve=Resolver())
    return ClientKeyFetcher(guard, clock=clock)


async def test_inline_keys_are_returned_without_a_fetch(fetcher: ClientKeyFetcher, server: JwksServer) -> None:
    client = inline_client("billing", "k1", "k2")
    assert [key["kid"] for key in await fetcher.keys(client, kid="k9")] == ["k1", "k2"]
    assert server.hits == {}


async def test_a_set_is_cached_for_its_max_age(
    fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock
) -> None:
    client = uri_client(server.url())
    first = await fetcher.keys(client)
    assert first == server.jwks["keys"]
    server.jwks = {"keys": [ec_jwk("k2")]}
    clock.advance(599)
    assert await fetcher.keys(client) == first and server.hits == {"jwks": 1}
    clock.advance(1)
    assert [key["kid"] for key in await fetcher.keys(client)] == ["k2"] and server.hits == {"jwks": 2}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 300), ("max-age=5", 60), ("max-age=600", 600), ("public, max-age=9999999999", 86400),
     ('max-age="120"', 120), ("no-store", 60), ("no-cache, max-age=600", 60), ("max-age=soon", 300),
     ("private", 300)],
)  # fmt: skip
def test_the_cache_lifetime_is_max_age_within_bounds(header: str | None, seconds: int) -> None:
    assert cache_lifetime(header, default=300, floor=60, ceiling=86400) == seconds


async def test_without_max_age_the_default_applies(
    fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock
) -> None:
    server.cache_control = None
    client = uri_client(server.url())
    await fetcher.keys(client)
    clock.advance(299)
    await fetcher.keys(client)
    clock.advance(1)
    await fetcher.keys(client)
    assert server.hits == {"jwks": 2}


async def test_an_unknown_kid_refetches_early_at_most_once_per_interval(
    fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock
) -> None:
    client = uri_client(server.url())
    await fetcher.keys(client, kid="k1")
    clock.advance(30)
    server.jwks = {"keys": [ec_jwk("k1"), ec_jwk("k2")]}
    assert "k2" in [key["kid"] for key in await fetcher.keys(client, kid="k2")]  # rotated: found by one refetch
    for _ in range(50):  # made-up kids: no more fetches within the interval
        await fetcher.keys(client, kid="made-up")
    assert server.hits == {"jwks": 2}
    clock.advance(30)
    await fetcher.keys(client, kid="made-up")
    await fetcher.keys(client, kid="made-up")
    assert server.hits == {"jwks": 3}


async def test_a_known_kid_never_refetches(fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock) -> None:
    client = uri_client(server.url())
    for _ in range(5):
        await fetcher.keys(client, kid="k1")
        clock.advance(100)
    assert server.hits == {"jwks": 1}


async def test_the_last_good_set_is_served_for_a_bounded_time_when_a_refresh_fails(
    fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock
) -> None:
    client = uri_client(server.url())
    good = await fetcher.keys(client)
    server.down = True
    clock.advance(600)
    assert await fetcher.keys(client) == good  # refresh failed: stale set served
    for _ in range(10):
        assert await fetcher.keys(client) == good
    assert server.hits == {"jwks": 2}  # and the down URI is not asked again within the interval
    clock.advance(3600 - 1)
    assert await fetcher.keys(client) == good and server.hits == {"jwks": 3}
    clock.advance(1)
    with pytest.raises(ClientKeysUnavailableError):
        await fetcher.keys(client)


async def test_a_first_fetch_that_fails_raises_and_is_not_retried_at_once(
    fetcher: ClientKeyFetcher, server: JwksServer, clock: ManualClock
) -> None:
    client = uri_client(server.url("/private"))
    for _ in range(3):
        with pytest.raises(ClientKeysRefusedError):
            await fetcher.keys(client)
    assert server.hits == {"private": 1}
    clock.advance(30)
    with pytest.raises(ClientKeysRefusedError):
        await fetcher.keys(client)
    assert server.hits == {"private": 2}


async def test_concurrent_callers_share_one_fetch(fetcher: ClientKeyFetcher, server: JwksServer) -> None:
    client = uri_client(server.url())
    results = await asyncio.gather(*(fetcher.keys(client) for _ in range(20)))
    assert all(result == server.jwks["keys"] for result in results) and server.hits == {"jwks": 1}


async def test_a_new_jwks_uri_starts_afresh_and_forget_drops_the_entry(
    fetcher: ClientKeyFetcher, server: JwksServer
) -> None:
    client = uri_client(server.url())
    await fetcher.keys(client)
    moved = replace(client, jwks_uri=server.url("/jwks?v=2"))
    await fetcher.keys(moved)
    fetcher.forget(client.client_id)
    await fetcher.keys(moved)
    assert server.hits == {"jwks": 3}
