"""Tests for broker.server.issued: a token presented back to its issuer verifies against the keyring's published
keys with the verifier's checks, whatever its audience and without the holder's certificate; anything else is
None (never a reason)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.server.issued import IssuedTokenCheck
from broker.testing import ManualClock
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import SigningKey
from tests.jose_helpers import encode

ISSUER = "https://broker.example.org:8443"
WEB = "spiffe://example.org/ns/shop/sa/web"
API = "https://api.example.org"


class Keys:
    """A key store whose published set the test changes: the active key and a retiring one."""

    def __init__(self) -> None:
        self.active, self.retiring = SigningKey.generate(), SigningKey.generate()
        self.published: tuple[SigningKey, ...] = (self.active, self.retiring)

    def active_key(self) -> SigningKey:
        return self.active

    def published_keys(self) -> Sequence[SigningKey]:
        return self.published


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(int(time.time())))  # the client's SVID is valid now


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def check(keys: Keys, clock: ManualClock) -> IssuedTokenCheck:
    return IssuedTokenCheck(issuer=ISSUER, keys=keys, clock=clock)


def issue(keys: Keys, clock: ManualClock, audience: str = API, issuer: str = ISSUER) -> str:
    svid = DevCA.ephemeral("example.org").issue_x509_svid(SpiffeId.parse(WEB), ttl=3600)
    client = AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)
    signer = AccessTokenIssuer(issuer=issuer, key_store=keys, clock=clock)
    return signer.issue(client=client, audience=audience, scopes=frozenset({"orders:read"}), max_lifetime=60).token


def forge(key: SigningKey, clock: ManualClock, **overrides: Any) -> str:
    header = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt", **overrides.pop("header", {})}
    header = {k: v for k, v in header.items() if v is not None}  # None: leave the member out
    now = int(clock())
    claims = {
        "iss": ISSUER, "sub": WEB, "client_id": WEB, "aud": API, "iat": now, "exp": now + 60, "jti": "j1",
        "cnf": {"x5t#S256": "x"}, **overrides,
    }  # fmt: skip
    return encode(header, {k: v for k, v in claims.items() if v is not None}, key.private_key)


async def test_a_token_of_this_broker_verifies_whatever_its_audience(
    check: IssuedTokenCheck, keys: Keys, clock: ManualClock
) -> None:
    for audience in (API, "spiffe://example.org/ns/billing/sa/api"):
        checked = await check.check(issue(keys, clock, audience))
        assert checked is not None
        assert (checked.subject, checked.audiences, checked.kid) == (WEB, (audience,), keys.active.kid)
        assert checked.issued_at == datetime.fromtimestamp(int(clock()), UTC)
        assert checked.claims["scope"] == "orders:read" and "x5t#S256" in checked.claims["cnf"]


async def test_a_retiring_key_still_verifies_and_a_key_gone_from_the_jwks_does_not(
    check: IssuedTokenCheck, keys: Keys, clock: ManualClock
) -> None:
    keys.active, keys.retiring = keys.retiring, keys.active  # the token is signed by the retiring key
    token = issue(keys, clock)
    keys.active, keys.retiring = keys.retiring, keys.active
    assert await check.check(token) is not None
    keys.published = (keys.active,)  # retired or revoked: no longer published
    assert await check.check(token) is None


async def test_an_expired_token_does_not_verify_from_its_exp_on(
    check: IssuedTokenCheck, keys: Keys, clock: ManualClock
) -> None:
    token = issue(keys, clock)
    clock.advance(59.5)
    assert await check.check(token) is not None
    clock.advance(0.5)
    assert await check.check(token) is None, "no leeway at the issuer (RFC 7519 §4.1.4)"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"iss": "https://other.example.org"}, id="other-issuer"),
        pytest.param({"cnf": None}, id="not-certificate-bound"),
        pytest.param({"sub": "web"}, id="subject-not-a-spiffe-id"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"aud": [7]}, id="audience-not-a-string"),
        pytest.param({"iat": 1900000000}, id="issued-in-the-future"),
        pytest.param({"header": {"typ": "JWT"}}, id="not-an-access-token"),
        pytest.param({"header": {"crit": ["x"]}}, id="critical-extension"),
        pytest.param({"header": {"kid": None}}, id="no-kid"),
    ],
)
async def test_a_token_whose_claims_or_header_fail_the_verifiers_rules_is_none(
    check: IssuedTokenCheck, keys: Keys, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    assert await check.check(forge(keys.active, clock)) is not None  # the same forge without the flaw verifies
    assert await check.check(forge(keys.active, clock, **overrides)) is None


async def test_a_token_signed_by_another_key_under_our_kid_is_none(
    check: IssuedTokenCheck, keys: Keys, clock: ManualClock
) -> None:
    impostor = SigningKey.generate()
    token = forge(impostor, clock, header={"kid": keys.active.kid})
    assert await check.check(token) is None


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 20000])
async def test_malformed_input_is_none(check: IssuedTokenCheck, token: str) -> None:
    assert await check.check(token) is None
