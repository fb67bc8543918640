"""ValidateJWTSVID's checks (JWT-SVID §2-§4); failures name the rule and never echo the token."""

from __future__ import annotations

import base64
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from broker.identity.devca import DevCA
from broker.identity.errors import JwtSvidError
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.workload_api.jwt_validation import validate_token

TD = TrustDomain("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _resign_header(ca: DevCA, header: dict[str, object], claims: dict[str, object]) -> str:
    from joserfc.jwk import ECKey

    key = ECKey.import_key(ca.jwt_key)
    return jwt.encode(header, claims, key, algorithms=[str(header["alg"])])


def test_valid_token_yields_subject_and_claims(ca: DevCA) -> None:
    token = ca.mint_jwt_svid(WEB, ["a", "b"], ttl=60).token
    subject, claims = validate_token(token, audience="b", bundles={TD: ca.jwt_bundle()})
    assert subject == WEB
    assert claims["aud"] == ["a", "b"]


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"sub": str(WEB), "aud": ["a"], "exp": now + 60, "iat": now}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    ("header", "claims", "message"),
    [
        pytest.param({"typ": "JWT"}, _claims(aud=["other"]), "audience", id="wrong-audience"),
        pytest.param({"typ": "JWT"}, _claims(aud=None), "no audience", id="no-audience"),
        pytest.param({"typ": "JWT"}, _claims(exp=int(time.time()) - 1), "expired", id="expired"),
        pytest.param({"typ": "JWT"}, _claims(exp=None), "expiration", id="no-exp"),
        pytest.param({"typ": "JWT"}, _claims(nbf=int(time.time()) + 600), "not valid yet", id="not-before"),
        pytest.param({"typ": "JWT"}, _claims(sub=None), "no subject", id="no-sub"),
        pytest.param({"typ": "JWT"}, _claims(sub="https://example.org/web"), "SPIFFE ID", id="sub-not-spiffe-id"),
        pytest.param({"typ": "JWT"}, _claims(sub="spiffe://other.org/web"), "no JWT bundle", id="foreign-td"),
        pytest.param({"typ": "at+jwt"}, _claims(), "typ", id="bad-typ"),
        pytest.param({"typ": "JWT", "jku": "https://evil.example/jwks"}, _claims(), "header", id="extra-header"),
    ],
)
def test_invalid_tokens_are_rejected(
    ca: DevCA, header: dict[str, object], claims: dict[str, object], message: str
) -> None:
    token = _resign_header(ca, {"alg": "ES256", "kid": ca.jwt_kid, **header}, claims)
    with pytest.raises(JwtSvidError, match=message) as caught:
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})
    assert token not in str(caught.value)


def test_token_with_unknown_kid_is_rejected(ca: DevCA) -> None:
    token = _resign_header(ca, {"alg": "ES256", "kid": "other"}, _claims())
    with pytest.raises(JwtSvidError, match="key ID"):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})


def test_token_without_kid_is_rejected(ca: DevCA) -> None:
    token = _resign_header(ca, {"alg": "ES256"}, _claims())
    with pytest.raises(JwtSvidError, match="key ID"):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})


def test_token_signed_by_other_key_with_same_kid_is_rejected(ca: DevCA) -> None:
    other = DevCA.ephemeral(TD)
    token = _resign_header(other, {"alg": "ES256", "kid": ca.jwt_kid}, _claims())
    with pytest.raises(JwtSvidError, match="signature"):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})


def test_hmac_token_is_rejected_before_any_key_is_used(ca: DevCA) -> None:
    token = jwt.encode(
        {"alg": "HS256", "kid": ca.jwt_kid}, _claims(), OctKey.import_key(b"k" * 32), algorithms=["HS256"]
    )
    with pytest.raises(JwtSvidError, match="algorithm"):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})


def test_unsigned_token_is_rejected(ca: DevCA) -> None:
    token = f"{_b64({'alg': 'none', 'kid': ca.jwt_kid})}.{_b64(_claims())}."
    with pytest.raises(JwtSvidError):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "é.é.é", f"{_b64({'alg': 'ES256'})}.W10.sig"])
def test_malformed_tokens_are_rejected(ca: DevCA, token: str) -> None:
    with pytest.raises(JwtSvidError):
        validate_token(token, audience="a", bundles={TD: ca.jwt_bundle()})
