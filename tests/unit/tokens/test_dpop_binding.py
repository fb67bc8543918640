"""Tests for broker.tokens.dpop: DPoP at the token endpoint (RFC 9449 §4.3 checks, §8 nonces, §5 ``token_type``,
§6.1 ``cnf.jkt``, §5.1 metadata). Refusals through the endpoint check the error and that no token was issued."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.devtools.devca import DevCA
from broker.errors import InvalidDpopProofError, InvalidRequestError, UseDpopNonceError
from broker.jose.jwk import public_jwk
from broker.oauth.binding import Jkt, X5tS256
from broker.oauth.replay import MemoryReplayCache
from broker.tokens.client_auth import RequestContext
from broker.tokens.dpop import DEFAULT_DPOP_ALGORITHMS, DpopBinding
from broker.tokens.drift import DriftSource, DriftTracker
from broker.tokens.issuer import AuthenticatedClient
from tests.jose_helpers import b64
from tests.unit.oauth.dpop_helpers import DROP
from tests.unit.tokens.client_auth.assertion_helpers import LEEWAY, NOW, TOKEN_URL, Clock, dpop_proof, make_service
from tests.unit.tokens.endpoint_helpers import cc_form

KEY = ec.generate_private_key(ec.SECP256R1())


def binding(**kwargs: Any) -> DpopBinding:
    fields: dict[str, Any] = {
        "token_endpoint": TOKEN_URL,
        "replay": MemoryReplayCache(),
        "drift": DriftTracker(leeway=LEEWAY),
        "clock": Clock(),
        **kwargs,
    }
    return DpopBinding(**fields)


def with_proof(*proofs: str) -> RequestContext:
    return RequestContext(dpop=proofs)


def rfc7638(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 §3.2 for an EC key, computed here: the required members, sorted, no whitespace, SHA-256."""
    jwk = public_jwk(key.public_key())
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    return b64(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


async def test_proof_binds_to_the_rfc7638_thumbprint_of_its_key(client: AuthenticatedClient) -> None:
    bound = await binding().binding(client, with_proof(dpop_proof(KEY)))
    assert bound == Jkt(rfc7638(KEY))
    assert bound is not None and bound.cnf() == {"jkt": rfc7638(KEY)}


async def test_without_a_proof_the_certificate_binds(client: AuthenticatedClient) -> None:
    assert await binding().binding(client, RequestContext()) == client.binding()
    assert isinstance(client.binding(), X5tS256)


async def test_without_proof_or_certificate_bearer_is_refused_unless_allowed(client: AuthenticatedClient) -> None:
    bare = AuthenticatedClient(spiffe_id=client.spiffe_id)
    with pytest.raises(InvalidRequestError):
        await binding().binding(bare, RequestContext())
    assert await binding(allow_bearer=True).binding(bare, RequestContext()) is None


def forged_jwk_with_private_member() -> dict[str, Any]:
    return {**public_jwk(KEY.public_key()), "d": b64(KEY.private_numbers().private_value.to_bytes(32, "big"))}


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P384 = ec.generate_private_key(ec.SECP384R1())

REFUSED: list[tuple[str, Any, str]] = [
    ("typ-jwt", lambda: dpop_proof(KEY, header={"typ": "JWT"}), "ProofTypeError"),
    ("typ-missing", lambda: dpop_proof(KEY, header={"typ": DROP}), "ProofTypeError"),
    ("alg-not-advertised", lambda: dpop_proof(P384, alg="ES384"), "ProofAlgorithmError"),
    ("alg-hs256", lambda: dpop_proof(KEY, header={"alg": "HS256"}), "ProofAlgorithmError"),
    ("alg-none", lambda: dpop_proof(KEY, header={"alg": "none"}), "ProofAlgorithmError"),
    ("jwk-private", lambda: dpop_proof(KEY, header={"jwk": forged_jwk_with_private_member()}), "PrivateKeyInProof"),
    ("jwk-missing", lambda: dpop_proof(KEY, header={"jwk": DROP}), "ProofKeyError"),
    ("htm-get", lambda: dpop_proof(KEY, htm="GET"), "HtmMismatchError"),
    ("htm-lowercase", lambda: dpop_proof(KEY, htm="post"), "HtmMismatchError"),
    ("htu-other-path", lambda: dpop_proof(KEY, htu=TOKEN_URL + "2"), "HtuMismatchError"),
    ("htu-http", lambda: dpop_proof(KEY, htu=TOKEN_URL.replace("https:", "http:")), "HtuMismatchError"),
    ("htu-other-port", lambda: dpop_proof(KEY, htu=TOKEN_URL.replace(":8443", ":443")), "HtuMismatchError"),
    ("iat-too-old", lambda: dpop_proof(KEY, iat=int(NOW - 60 - LEEWAY - 1)), "ProofTooOldError"),
    ("iat-in-future", lambda: dpop_proof(KEY, iat=int(NOW + LEEWAY + 1)), "ProofFromFutureError"),
    ("jti-missing", lambda: dpop_proof(KEY, jti=DROP), "MissingClaimError"),
    ("signature", lambda: dpop_proof(KEY)[:-4] + "AAAA", "ProofSignatureError"),
]


@pytest.mark.parametrize(("make", "kind"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_proof_failing_a_check_is_invalid_dpop_proof_and_issues_no_token(
    ca: DevCA, client: AuthenticatedClient, make: Any, kind: str
) -> None:
    service = make_service(ca)
    service.endpoint.sender_constraint = binding(algorithms=("ES256",), replay=service.replay)
    error = await service.refused(cc_form(), with_proof(make()), transport=client)
    assert error.error == "invalid_dpop_proof"
    assert type(error).__name__.startswith(kind)


@pytest.mark.parametrize(
    "htu",
    [
        TOKEN_URL + "?q=1",
        TOKEN_URL + "#f",
        TOKEN_URL.replace("broker", "BROKER"),
        TOKEN_URL.replace("https", "HTTPS"),
        TOKEN_URL.replace("/token", "/%74oken"),
    ],
    ids=["query-ignored", "fragment-ignored", "host-case", "scheme-case", "percent-encoded-unreserved"],
)
async def test_htu_is_compared_after_normalisation(client: AuthenticatedClient, htu: str) -> None:
    """RFC 9449 §4.3 item 9: query and fragment ignored, RFC 3986 §6.2.2 and §6.2.3 normalisation."""
    assert await binding().binding(client, with_proof(dpop_proof(KEY, htu=htu))) == Jkt(rfc7638(KEY))


async def test_default_port_is_normalised_away(client: AuthenticatedClient) -> None:
    checker = binding(token_endpoint="https://broker.example.org/token")
    proof = dpop_proof(KEY, htu="https://broker.example.org:443/token")
    assert await checker.binding(client, with_proof(proof)) == Jkt(rfc7638(KEY))


async def test_two_dpop_headers_are_invalid_dpop_proof(client: AuthenticatedClient) -> None:
    with pytest.raises(InvalidDpopProofError):
        await binding().binding(client, with_proof(dpop_proof(KEY), dpop_proof(KEY)))


async def test_replayed_proof_is_refused_and_counts_once_as_drift(client: AuthenticatedClient) -> None:
    drift = DriftTracker(leeway=LEEWAY)
    checker = binding(drift=drift)
    proof = dpop_proof(KEY, iat=int(NOW) - 3)
    await checker.binding(client, with_proof(proof))
    with pytest.raises(InvalidDpopProofError) as caught:
        await checker.binding(client, with_proof(proof))
    assert type(caught.value).__name__ == "ProofReplayedError"
    report = drift.report(client.client_id, DriftSource.DPOP)
    assert report is not None and (report.samples, report.median) == (1, 3.0)


async def test_an_algorithm_advertised_is_accepted(client: AuthenticatedClient) -> None:
    proof = dpop_proof(RSA, alg="PS256")
    assert await binding().binding(client, with_proof(proof)) is not None


async def test_nonce_round_trip_ends_in_a_dpop_token(ca: DevCA, client: AuthenticatedClient, decode: Any) -> None:
    """RFC 9449 §8: ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``, then the proof with it gets the token."""
    service = make_service(ca, nonce=True)
    first = await service.refused(cc_form(), with_proof(dpop_proof(KEY)), transport=client)
    assert isinstance(first, UseDpopNonceError)
    assert first.error == "use_dpop_nonce"
    assert service.nonces is not None and first.headers["DPoP-Nonce"] == service.nonces.current()
    wrong = await service.refused(cc_form(), with_proof(dpop_proof(KEY, nonce="x" * 32)), transport=client)
    assert wrong.error == "use_dpop_nonce"
    proof = dpop_proof(KEY, nonce=first.headers["DPoP-Nonce"])
    response = await service.request(cc_form(), with_proof(proof), transport=client)
    assert response.token_type == "DPoP"
    assert response.to_json()["token_type"] == "DPoP"
    claims = decode(response.token.token, service.key_store)[1]
    assert claims["cnf"] == {"jkt": rfc7638(KEY)}  # the DPoP key, not the certificate (RFC 9449 §5)
    assert response.headers == {"DPoP-Nonce": service.nonces.current()}, "RFC 9449 §8.2: the next nonce on success"


async def test_no_dpop_nonce_header_without_server_nonces(ca: DevCA, client: AuthenticatedClient) -> None:
    response = await make_service(ca).request(cc_form(), with_proof(dpop_proof(KEY)), transport=client)
    assert response.token_type == "DPoP" and response.headers == {}


def test_metadata_advertises_the_dpop_algorithms() -> None:
    assert binding().metadata() == {"dpop_signing_alg_values_supported": list(DEFAULT_DPOP_ALGORITHMS)}
    assert binding(algorithms=("ES256",)).metadata() == {"dpop_signing_alg_values_supported": ["ES256"]}
    assert not any(alg.startswith("HS") or alg == "none" for alg in DEFAULT_DPOP_ALGORITHMS)
