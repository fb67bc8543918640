"""JWT-SVIDs minted by a real SPIRE agent as ``jwt-spiffe`` client assertions (draft-ietf-oauth-spiffe-client-auth
§3.1) at the token service, in both reuse modes of the policy (``jwt_svid_reuse``), with and without
``-jwtSVIDIncludeJTI``.

The SPIRE caveat these modes exist for (v1.15.3): the agent caches a JWT-SVID per (SPIFFE ID, audience) and hands
out the same token, ``jti`` included, until half its lifetime has passed. So:

* ``single-use``: the first presentation gets a token; the agent's next (identical) JWT-SVID is refused
  ``invalid_client``, and a JWT-SVID without ``jti`` is refused outright;
* ``sender-bound``: repeats are accepted over mutual TLS with the same identity's X.509-SVID; the same JWT-SVID with
  another workload's X.509-SVID, with no client certificate, or with a DPoP proof of another key is refused.

A workload with no X.509-SVID to present binds its token with DPoP (``cnf.jkt``); ``sender-bound`` then has no sender
to accept a repeat from, so the agent's repeat is refused as in ``single-use``. Also here: ``aud`` other than the
issuer alone (RFC 7523bis §4), a JWT-SVID longer than the default 60 s lifetime cap, the metadata, and the RFC 9449
§8 nonce retry, which a SPIRE workload makes with the same JWT-SVID.

Every refusal is RFC 7521 §4.2.1 ``invalid_client`` (401, no token). Each identity has its own entry (spine.py) with
a 60 s JWT-SVID TTL, the default assertion lifetime cap; the assertions' ``aud`` is the service's issuer.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.jose.jwk import public_jwk
from tests.integration.spine import (
    APP,
    DEMO_AUDIENCE,
    JWT_JTI,
    JWT_ONLY,
    SENDER_BOUND_JTI,
    SENDER_BOUND_PLAIN,
    SINGLE_USE_JTI,
    SINGLE_USE_PLAIN,
    Reply,
    Spine,
    SvidFiles,
    Workload,
    fetch_jwt_svid,
    fetch_svid_files,
    https_request,
    jwt_part,
    private_dir,
    spine_fixture,
    tls_context,
)
from tests.integration.spire import SpireDeployment
from tests.jose_helpers import b64, sign

pytestmark = pytest.mark.spire

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
IDENTITIES = (SINGLE_USE_JTI, SINGLE_USE_PLAIN, SENDER_BOUND_JTI, SENDER_BOUND_PLAIN, JWT_JTI)

service = spine_fixture(APP, full=False, name="service")  # the token service alone
nonce_service = spine_fixture(APP, full=False, name="nonce_service", config="[dpop]\nrequire_nonce = true\n")


@pytest.fixture(scope="module")
def x509(spire: SpireDeployment) -> Iterator[dict[str, SvidFiles]]:
    """Each test identity's X509-SVID as files (from the agent, fetched as that identity)."""
    with private_dir("svids.") as root:
        yield {w.name: fetch_svid_files(spire, w, root / w.name) for w in IDENTITIES}


def _dpop_proof(key: ec.EllipticCurvePrivateKey, htu: str, nonce: str | None = None) -> str:
    """A fresh RFC 9449 §4.2 proof for ``POST htu``, signed independently of the code under test."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key.public_key())}
    claims = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": htu, "iat": int(time.time())}
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(sign("ES256", key, signing_input.encode()))


def _jkt(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 §3: the JWK SHA-256 thumbprint over the required EC members in lexicographic order."""
    jwk = public_jwk(key.public_key())
    members = json.dumps({name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return b64(hashlib.sha256(members.encode()).digest())


def _present(service: Spine, assertion: str, *, bundle: Path, cert: SvidFiles | None, dpop: str | None = None) -> Reply:
    """POST /token, ``client_credentials`` authenticated by ``assertion`` (jwt-spiffe), over TLS with ``cert``'s
    X509-SVID as client certificate, or none."""
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": assertion,
        "audience": DEMO_AUDIENCE,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded", **({"DPoP": dpop} if dpop else {})}
    context = tls_context(bundle, cert)
    return https_request(service.server_port, "POST", "/token", context=context, body=urlencode(form), headers=headers)


def _assert_issued(reply: Reply, workload: Workload, client: SvidFiles, issuer: str) -> None:
    """A Bearer token for ``workload`` bound to ``client``'s certificate (RFC 8705 §3)."""
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["token_type"] == "Bearer"
    claims = jwt_part(body["access_token"], 1)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (issuer, workload.spiffe_id, DEMO_AUDIENCE)
    assert claims["cnf"] == {"x5t#S256": client.x5t_s256()}


def _assert_refused(reply: Reply, *, saying: str) -> None:
    """RFC 7521 §4.2.1 / RFC 6749 §5.2: 401 ``invalid_client``, no token; the description names the rule."""
    body = reply.json()
    assert (reply.status, body["error"]) == (401, "invalid_client"), reply.body
    assert "access_token" not in body
    assert saying in body["error_description"]


def _svid(spire: SpireDeployment, workload: Workload, audience: str) -> tuple[str, dict[str, Any]]:
    """A JWT-SVID from the agent and its claims, checked to be what the entry asks SPIRE for."""
    token = fetch_jwt_svid(spire, workload, audience)
    claims = jwt_part(token, 1)
    assert (claims["sub"], claims["aud"]) == (workload.spiffe_id, [audience])
    assert ("jti" in claims) is workload.include_jti
    return token, claims


def test_single_use_jwt_svid_with_jti_gets_one_token_and_the_agents_repeat_is_refused(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    workload, own = SINGLE_USE_JTI, x509[SINGLE_USE_JTI.name]
    token, claims = _svid(spire, workload, service.issuer)
    assert claims["exp"] == claims["iat"] + workload.jwt_ttl
    _assert_issued(_present(service, token, bundle=own.bundle, cert=own), workload, own, service.issuer)
    again, _ = _svid(spire, workload, service.issuer)
    assert again == token, "the agent minted a new JWT-SVID: this test no longer exercises its cache"
    _assert_refused(_present(service, again, bundle=own.bundle, cert=own), saying="already used")


def test_single_use_jwt_svid_without_jti_is_refused(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    own = x509[SINGLE_USE_PLAIN.name]
    token, _ = _svid(spire, SINGLE_USE_PLAIN, service.issuer)
    for _ in range(2):  # nothing was recorded: the same refusal again
        _assert_refused(_present(service, token, bundle=own.bundle, cert=own), saying="must carry a 'jti'")


@pytest.mark.parametrize(
    ("workload", "other"),
    [
        pytest.param(SENDER_BOUND_JTI, SENDER_BOUND_PLAIN, id="entry-with-jti"),
        pytest.param(SENDER_BOUND_PLAIN, SENDER_BOUND_JTI, id="entry-without-jti"),
    ],
)
def test_sender_bound_jwt_svid_repeats_only_over_mtls_from_its_own_spiffe_id(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles], workload: Workload, other: Workload
) -> None:
    own = x509[workload.name]
    token, _ = _svid(spire, workload, service.issuer)
    for _ in range(3):  # the first use, then two repeats
        _assert_issued(_present(service, token, bundle=own.bundle, cert=own), workload, own, service.issuer)
    assert _svid(spire, workload, service.issuer)[0] == token, "the agent minted a new JWT-SVID"
    mismatched = _present(service, token, bundle=own.bundle, cert=x509[other.name])
    _assert_refused(mismatched, saying="different SPIFFE IDs")
    bearer = _present(service, token, bundle=own.bundle, cert=None)  # no certificate, no DPoP: a bearer token
    assert (bearer.status, bearer.json()["error"]) == (400, "invalid_request"), bearer.body
    assert "access_token" not in bearer.json() and "sender-constrained" in bearer.json()["error_description"]
    thief = _dpop_proof(ec.generate_private_key(ec.SECP256R1()), f"{service.issuer}/token")
    _assert_refused(_present(service, token, bundle=own.bundle, cert=None, dpop=thief), saying="already used")
    # The refusals took nothing from the workload itself.
    _assert_issued(_present(service, token, bundle=own.bundle, cert=own), workload, own, service.issuer)


@pytest.mark.parametrize(
    "workload",
    [pytest.param(SINGLE_USE_JTI, id="entry-with-jti"), pytest.param(SINGLE_USE_PLAIN, id="entry-without-jti")],
)
def test_spire_agent_hands_out_the_same_jwt_svid_within_half_its_ttl(
    spire: SpireDeployment, service: Spine, workload: Workload
) -> None:
    """The caveat itself: why single-use breaks every second call from a SPIRE workload. A fresh audience makes
    the agent mint a new JWT-SVID on the first fetch; the second, well within half the TTL, returns it again."""
    audience = f"{service.issuer}/caveat/{workload.name}"
    started = time.monotonic()
    first, first_claims = _svid(spire, workload, audience)
    second, second_claims = _svid(spire, workload, audience)
    assert time.monotonic() - started < workload.jwt_ttl / 2
    assert second == first
    assert second_claims.get("jti") == first_claims.get("jti")


def test_spire_jwt_svid_longer_than_the_default_assertion_lifetime_is_refused(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    """JWT_JTI's entry has a 120 s JWT-SVID TTL and its policy rule no ``max_assertion_lifetime``: the 60 s cap."""
    own = x509[JWT_JTI.name]
    token, claims = _svid(spire, JWT_JTI, service.issuer)
    assert claims["exp"] == claims["iat"] + JWT_JTI.jwt_ttl
    _assert_refused(_present(service, token, bundle=own.bundle, cert=own), saying="lifetime is longer than the 60 s")


def test_workload_without_x509_svid_binds_its_jwt_svid_with_dpop_once_and_the_agents_repeat_is_refused(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    """No client certificate: the token is bound to the DPoP key (RFC 9449 §5, ``cnf.jkt``). ``sender-bound`` has
    no sender to bind a repeat to, so the agent's cached JWT-SVID is single-use here too (docs/threat-model.md)."""
    bundle = x509[SINGLE_USE_JTI.name].bundle  # only to verify the server: every identity has the same bundle
    key, htu = ec.generate_private_key(ec.SECP256R1()), f"{service.issuer}/token"
    token, _ = _svid(spire, JWT_ONLY, service.issuer)
    reply = _present(service, token, bundle=bundle, cert=None, dpop=_dpop_proof(key, htu))
    assert reply.status == 200, reply.body
    assert reply.json()["token_type"] == "DPoP"
    claims = jwt_part(reply.json()["access_token"], 1)
    assert (claims["sub"], claims["aud"], claims["cnf"]) == (JWT_ONLY.spiffe_id, DEMO_AUDIENCE, {"jkt": _jkt(key)})
    again, _ = _svid(spire, JWT_ONLY, service.issuer)
    assert again == token, "the agent minted a new JWT-SVID"
    _assert_refused(
        _present(service, again, bundle=bundle, cert=None, dpop=_dpop_proof(key, htu)), saying="already used"
    )


@pytest.mark.parametrize(
    "audiences",
    [
        pytest.param(lambda issuer: [f"{issuer}/token"], id="token-endpoint-url"),
        pytest.param(lambda issuer: [issuer, "https://elsewhere.example.org"], id="issuer-and-another"),
    ],
)
def test_spire_jwt_svid_for_other_audiences_than_the_issuer_alone_is_refused(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles], audiences: Callable[[str], list[str]]
) -> None:
    """RFC 7523bis §4: ``aud`` is the issuer identifier as its sole value. SPIRE mints ``aud`` as an array."""
    own, wanted = x509[SENDER_BOUND_JTI.name], audiences(service.issuer)
    token = fetch_jwt_svid(spire, SENDER_BOUND_JTI, ",".join(wanted))
    assert jwt_part(token, 1)["aud"] == wanted
    reply = _present(service, token, bundle=own.bundle, cert=own)
    _assert_refused(reply, saying="aud")  # "(audience_mismatch)", or "'aud' must be ... its sole value"


def test_metadata_advertises_spiffe_jwt_and_spires_signing_algorithm(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    """RFC 8414 §2 and draft-ietf-oauth-spiffe-client-auth §4: ``spiffe_jwt``, and ES256 (SPIRE's default)."""
    own = x509[SINGLE_USE_JTI.name]
    path = "/.well-known/oauth-authorization-server"
    reply = https_request(service.server_port, "GET", path, context=tls_context(own.bundle, None), headers={})
    assert reply.status == 200, reply.body
    metadata = reply.json()
    assert "spiffe_jwt" in metadata["token_endpoint_auth_methods_supported"]
    token = fetch_jwt_svid(spire, SINGLE_USE_JTI, f"{service.issuer}/metadata-check")
    assert jwt_part(token, 0)["alg"] in metadata["token_endpoint_auth_signing_alg_values_supported"]


def test_dpop_nonce_round_trip_with_the_agents_cached_jwt_svid_gets_a_token(
    spire: SpireDeployment, nonce_service: Spine, x509: dict[str, SvidFiles]
) -> None:
    """RFC 9449 §8: a server that requires nonces answers the first proof ``use_dpop_nonce`` with a ``DPoP-Nonce``,
    and the client retries the request with a proof carrying it. A SPIRE workload retries with the JWT-SVID the
    agent hands it again: the same one, so the first answer must not have spent it (``DpopBinding.precheck``)."""
    bundle = x509[SINGLE_USE_JTI.name].bundle
    key, htu = ec.generate_private_key(ec.SECP256R1()), f"{nonce_service.issuer}/token"
    token, _ = _svid(spire, JWT_ONLY, nonce_service.issuer)
    first = _present(nonce_service, token, bundle=bundle, cert=None, dpop=_dpop_proof(key, htu))
    assert (first.status, first.json()["error"]) == (400, "use_dpop_nonce"), first.body
    again, _ = _svid(spire, JWT_ONLY, nonce_service.issuer)
    assert again == token, "the agent minted a new JWT-SVID"
    proof = _dpop_proof(key, htu, nonce=first.headers["dpop-nonce"])
    retry = _present(nonce_service, again, bundle=bundle, cert=None, dpop=proof)
    assert retry.status == 200, retry.body
    assert jwt_part(retry.json()["access_token"], 1)["cnf"] == {"jkt": _jkt(key)}
