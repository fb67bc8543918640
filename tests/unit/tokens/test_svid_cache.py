"""A JWT-SVID presented again is not re-verified, but expiry, bundle changes and the client check still apply."""

from __future__ import annotations

import time
from typing import Any

import pytest

import broker.tokens.grants.token_exchange as exchange_module
from broker.devtools.devca import DevCA
from broker.errors import InvalidGrantError
from broker.identity.bundle import JwtBundle
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.svid import JwtSvid
from broker.oauth.constants import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from broker.testing import ManualClock
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.svid_cache import ValidatedSvidCache
from tests.unit.tokens.endpoint_helpers import ISSUER, make_endpoint

API = "https://api.example.org"
POLICY = policy_yaml(policy_rule(trust_domain="example.org", scopes=()))


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = validate_jwt_svid  # what broker.tokens.grants.token_exchange calls

    def counting(*args: Any, **kwargs: Any) -> JwtSvid:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(exchange_module, "validate_jwt_svid", counting)
    return calls


def make_service(bundles: dict[TrustDomain, JwtBundle], clock: ManualClock) -> TokenEndpoint:
    return make_endpoint(
        key_store=InMemoryKeyStore(), jwt_bundles=lambda: bundles, policy=POLICY, clock=clock, issuer_clock=clock
    )


def form(token: str) -> dict[str, list[str]]:
    return {
        "grant_type": [GRANT_TOKEN_EXCHANGE],
        "subject_token": [token],
        "subject_token_type": [TOKEN_TYPE_JWT],
        "audience": [API],
    }


def client_of(ca: DevCA, path: str) -> AuthenticatedClient:
    svid = ca.issue_x509_svid(SpiffeId.parse(f"spiffe://example.org{path}"), ttl=3600)
    return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)


async def test_repeated_jwt_svid_is_validated_once(validations: list[int]) -> None:
    ca, clock = DevCA.ephemeral("example.org"), ManualClock(time.time())
    service = make_service({ca.trust_domain: ca.jwt_bundle()}, clock)
    client = client_of(ca, "/web")
    token = ca.mint_jwt_svid(client.spiffe_id, [ISSUER], ttl=300).token
    for _ in range(3):
        await service.handle(form(token), client)
    assert len(validations) == 1


async def test_cached_jwt_svid_is_refused_once_expired(validations: list[int]) -> None:
    ca, clock = DevCA.ephemeral("example.org"), ManualClock(time.time())
    service = make_service({ca.trust_domain: ca.jwt_bundle()}, clock)
    client = client_of(ca, "/web")
    token = ca.mint_jwt_svid(client.spiffe_id, [ISSUER], ttl=60).token
    await service.handle(form(token), client)
    clock.now += 60 + 31  # past exp plus the 30 s leeway
    with pytest.raises(InvalidGrantError):
        await service.handle(form(token), client)


async def test_cached_jwt_svid_is_revalidated_when_its_bundle_changes(validations: list[int]) -> None:
    ca, clock = DevCA.ephemeral("example.org"), ManualClock(time.time())
    bundles = {ca.trust_domain: ca.jwt_bundle()}
    service = make_service(bundles, clock)
    client = client_of(ca, "/web")
    token = ca.mint_jwt_svid(client.spiffe_id, [ISSUER], ttl=300).token
    await service.handle(form(token), client)
    bundles[ca.trust_domain] = DevCA.ephemeral("example.org").jwt_bundle()  # the signing key was removed
    with pytest.raises(InvalidGrantError):
        await service.handle(form(token), client)
    assert len(validations) == 2


async def test_cached_jwt_svid_presented_by_another_client_is_refused(validations: list[int]) -> None:
    ca, clock = DevCA.ephemeral("example.org"), ManualClock(time.time())
    service = make_service({ca.trust_domain: ca.jwt_bundle()}, clock)
    owner, thief = client_of(ca, "/web"), client_of(ca, "/thief")
    token = ca.mint_jwt_svid(owner.spiffe_id, [ISSUER], ttl=300).token
    await service.handle(form(token), owner)
    with pytest.raises(InvalidGrantError):
        await service.handle(form(token), thief)


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    ca = DevCA.ephemeral("example.org")
    bundles = {ca.trust_domain: ca.jwt_bundle()}
    cache = ValidatedSvidCache(max_entries=2)
    svids = [ca.mint_jwt_svid(SpiffeId.parse(f"spiffe://example.org/w{i}"), [ISSUER], ttl=300) for i in range(3)]
    keys = [ValidatedSvidCache.key(s.token, ISSUER) for s in svids]
    cache.put(keys[0], svids[0], bundles)
    cache.put(keys[1], svids[1], bundles)
    assert cache.get(keys[0], bundles, now=time.time(), leeway=30) is svids[0]  # 0 is now most recent
    cache.put(keys[2], svids[2], bundles)
    assert len(cache) == 2
    assert cache.get(keys[1], bundles, now=time.time(), leeway=30) is None
    assert cache.get(keys[0], bundles, now=time.time(), leeway=30) is svids[0]
