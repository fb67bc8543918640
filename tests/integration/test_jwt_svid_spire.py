"""JWT-SVIDs minted by a real SPIRE agent as RFC 8693 subject tokens at the token service.

SPIRE's JWT-SVIDs carry ``typ: JWT``, ``kid`` and ``alg: ES256`` and no ``iss``; a ``jti`` only when the entry sets
``-jwtSVIDIncludeJTI``. Each is exchanged over mTLS with the X509-SVID of the same identity (RFC 8705 §2); one
minted for another SPIFFE ID, or for another audience, is ``invalid_grant`` (RFC 8693 §2.2.2, RFC 6749 §5.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.integration.spine import (
    APP,
    DEMO_AUDIENCE,
    JWT_JTI,
    JWT_PLAIN,
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

pytestmark = pytest.mark.spire

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ENTRIES = [pytest.param(JWT_PLAIN, id="entry-without-jti"), pytest.param(JWT_JTI, id="entry-with-jti")]


service = spine_fixture(APP, full=False, name="service")  # the token service alone


@pytest.fixture(scope="module")
def x509(spire: SpireDeployment) -> Iterator[dict[str, SvidFiles]]:
    """Each JWT test identity's X509-SVID as files (from the agent, fetched as that identity)."""
    with private_dir("svids.") as root:
        yield {w.name: fetch_svid_files(spire, w, root / w.name) for w in (JWT_PLAIN, JWT_JTI)}


def _exchange(service: Spine, client: SvidFiles, subject_token: str) -> Reply:
    """POST /token (RFC 8693 §2.1) over mTLS with ``client``'s X509-SVID."""
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": JWT_TYPE,
        "audience": DEMO_AUDIENCE,
    }
    return https_request(
        service.server_port,
        "POST",
        "/token",
        context=tls_context(client.bundle, client),
        body=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def _assert_issued(reply: Reply, workload: Workload, client: SvidFiles) -> None:
    assert reply.status == 200, reply.body
    body = reply.json()
    assert (body["token_type"].lower(), body["issued_token_type"]) == ("bearer", ACCESS_TOKEN_TYPE)
    claims = jwt_part(body["access_token"], 1)
    assert claims["sub"] == workload.spiffe_id
    assert claims["cnf"] == {"x5t#S256": client.x5t_s256()}


@pytest.mark.parametrize("workload", ENTRIES)
def test_spire_jwt_svid_is_accepted_as_subject_token_with_the_same_identitys_x509_svid(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles], workload: Workload
) -> None:
    token = fetch_jwt_svid(spire, workload, service.issuer)
    header, claims = jwt_part(token, 0), jwt_part(token, 1)
    assert (header["typ"], header["alg"]) == ("JWT", "ES256")
    assert header["kid"]
    assert "iss" not in claims
    assert (claims["sub"], claims["aud"]) == (workload.spiffe_id, [service.issuer])
    assert ("jti" in claims) is workload.include_jti
    _assert_issued(_exchange(service, x509[workload.name], token), workload, x509[workload.name])


@pytest.mark.parametrize("workload", ENTRIES)
def test_jwt_svid_the_agent_hands_out_again_is_accepted_again(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles], workload: Workload
) -> None:
    """SPIRE's agent caches a JWT-SVID per (SPIFFE ID, audience) and hands the same one out again, ``jti`` or
    not (v1.15.3): the token service must accept it every time, as the sidecar's exchanges rely on that."""
    first, second = (fetch_jwt_svid(spire, workload, service.issuer) for _ in range(2))
    assert first == second, "the agent minted a new JWT-SVID: this test no longer exercises reuse"
    for _ in range(2):
        _assert_issued(_exchange(service, x509[workload.name], first), workload, x509[workload.name])


@pytest.mark.parametrize(
    ("minted_for", "presented_by"),
    [
        pytest.param(JWT_PLAIN, JWT_JTI, id="plain-svid-by-jti-client"),
        pytest.param(JWT_JTI, JWT_PLAIN, id="jti-svid-by-plain-client"),
    ],
)
def test_jwt_svid_minted_for_another_spiffe_id_is_refused_as_invalid_grant(
    spire: SpireDeployment,
    service: Spine,
    x509: dict[str, SvidFiles],
    minted_for: Workload,
    presented_by: Workload,
) -> None:
    token = fetch_jwt_svid(spire, minted_for, service.issuer)
    # Control: the presenting client is allowed by the policy and its own JWT-SVID is accepted.
    own = fetch_jwt_svid(spire, presented_by, service.issuer)
    assert _exchange(service, x509[presented_by.name], own).status == 200
    reply = _exchange(service, x509[presented_by.name], token)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_grant"


def test_jwt_svid_for_another_audience_is_refused_as_invalid_grant(
    spire: SpireDeployment, service: Spine, x509: dict[str, SvidFiles]
) -> None:
    token = fetch_jwt_svid(spire, JWT_PLAIN, "https://elsewhere.example.org")
    reply = _exchange(service, x509[JWT_PLAIN.name], token)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_grant"
