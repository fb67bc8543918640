"""Every refusal of the token endpoint: RFC 6749 §5.2 / RFC 8693 §2.2.2 code and status, no token, no state change.

Each case sends the bad request over real mTLS and checks the error code, the status, the no-store headers,
that the body has no ``access_token``, and that the issued count, the policy file and the key files are unchanged.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from broker.testing import forged_svid
from tests.unit.server.token_service_helpers import API, CLIENT_ID, ISSUER, Broker, client_context, request

OTHER_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/other")
CC = {"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API}


def exchange(ca: DevCA, *, sub: SpiffeId = CLIENT_ID, aud: str = ISSUER, ttl: float = 300, **extra: str) -> str:
    token = ca.mint_jwt_svid(sub, [aud], ttl=ttl).token
    form = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": API,
        **extra,
    }
    return "&".join(f"{k}={v}" for k, v in form.items())


def form(**fields: str) -> str:
    return "&".join(f"{k}={v}" for k, v in fields.items())


@dataclass
class Case:
    """A bad request: how to build it (given both CAs), and the expected status and error code."""

    id: str
    status: int
    error: str
    body: Callable[[DevCA], Any] = lambda ca: form(**CC)
    method: str = "POST"
    path: str = "/token"
    content_type: str | None = "application/x-www-form-urlencoded"
    cert: str = "client"  # client | none | forged
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("no-client-certificate", 401, "invalid_client", cert="none"),
    Case("cert-claiming-a-chained-to-b", 401, "invalid_client", cert="forged"),
    Case("jwt-svid-for-other-spiffe-id", 400, "invalid_grant", body=lambda ca: exchange(ca, sub=OTHER_ID)),
    Case("jwt-svid-expired", 400, "invalid_grant", body=lambda ca: exchange(ca, ttl=-120)),
    Case("jwt-svid-bad-audience", 400, "invalid_grant", body=lambda ca: exchange(ca, aud="https://elsewhere")),
    Case(
        "jwt-svid-garbage",
        400,
        "invalid_grant",
        body=lambda ca: form(
            grant_type=GRANT_TOKEN_EXCHANGE, subject_token="x.y.z", subject_token_type=TOKEN_TYPE_JWT, audience=API
        ),
    ),
    Case("audience-outside-policy", 400, "invalid_target", body=lambda ca: form(**{**CC, "audience": "https://evil"})),
    Case("two-targets", 400, "invalid_target", body=lambda ca: form(**CC) + "&audience=https://b"),
    Case("scope-outside-policy", 400, "invalid_scope", body=lambda ca: form(**CC, scope="admin")),
    Case("repeated-parameter", 400, "invalid_request", body=lambda ca: form(**CC) + "&grant_type=client_credentials"),
    Case(
        "json-body",
        400,
        "invalid_request",
        content_type="application/json",
        body=lambda ca: '{"grant_type": "client_credentials", "audience": "https://api.example.org"}',
    ),
    Case(
        "multipart-body",
        400,
        "invalid_request",
        content_type="multipart/form-data; boundary=x",
        body=lambda ca: "--x\r\nContent-Disposition: form-data; name=grant_type\r\n\r\nclient_credentials\r\n--x--\r\n",
    ),
    Case("no-content-type", 400, "invalid_request", content_type=None),
    Case("get-token-endpoint", 405, "invalid_request", method="GET", body=lambda ca: None),
    Case("oversized-body", 400, "invalid_request", body=lambda ca: form(**CC, pad="a" * 70000)),
    Case(
        "oversized-chunked-body", 400, "invalid_request", body=lambda ca: _chunks(form(**CC, pad="a" * 70000).encode())
    ),
    Case("unknown-grant-type", 400, "unsupported_grant_type", body=lambda ca: form(grant_type="password")),
    Case("missing-grant-type", 400, "invalid_request", body=lambda ca: form(audience=API)),
    Case("client-id-mismatch", 401, "invalid_client", body=lambda ca: form(**CC, client_id=str(OTHER_ID))),
    Case("actor-token-without-type", 400, "invalid_request", body=lambda ca: exchange(ca, actor_token="abc")),
    Case(
        "actor-token-delegation",
        400,
        "invalid_request",
        body=lambda ca: exchange(ca, actor_token="abc", actor_token_type=TOKEN_TYPE_JWT),
    ),
    Case(
        "wrong-subject-token-type",
        400,
        "invalid_request",
        body=lambda ca: exchange(ca).replace("token-type:jwt", "token-type:saml2"),
    ),
    Case("missing-target", 400, "invalid_request", body=lambda ca: form(grant_type=GRANT_CLIENT_CREDENTIALS)),
    Case("parameters-in-query", 400, "invalid_request", path="/token?grant_type=client_credentials"),
    Case("non-utf8-body", 400, "invalid_request", body=lambda ca: form(**CC, scope="%ff%fe")),
    Case("non-ascii-raw-body", 400, "invalid_request", body=lambda ca: (form(**CC) + "&scope=é").encode()),
    Case(
        "too-many-fields", 400, "invalid_request", body=lambda ca: form(**CC) + "".join(f"&f{i}=1" for i in range(100))
    ),
    Case("latin1-charset", 400, "invalid_request", content_type="application/x-www-form-urlencoded; charset=latin-1"),
    Case("unknown-path", 404, "invalid_request", path="/nope"),
]


async def _chunks(data: bytes) -> Any:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


def _context(case: Case, ca: DevCA, other_ca: DevCA) -> ssl.SSLContext:
    if case.cert == "none":
        return client_context(None, ca)
    if case.cert == "forged":
        return client_context(forged_svid(other_ca, str(CLIENT_ID)), ca)
    return client_context(ca.issue_x509_svid(CLIENT_ID, ttl=3600), ca)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_request_gets_oauth_error_and_no_token_and_no_state_change(
    broker: Broker, ca: DevCA, other_ca: DevCA, case: Case
) -> None:
    before = broker.snapshot()
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    body = case.body(ca)
    if case.content_type is None and isinstance(body, str):
        body = body.encode()  # bytes without a Content-Type header
    reply = await request(_context(case, ca, other_ca), case.method, broker.url + case.path, data=body, headers=headers)
    assert (reply.status, reply.body["error"]) == (case.status, case.error), reply.body
    assert "access_token" not in reply.body
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Content-Type"].startswith("application/json")
    assert broker.snapshot() == before
    if case.status == 401:
        assert "WWW-Authenticate" in reply.headers
    if case.status == 405:
        assert reply.headers["Allow"] == "POST"


async def test_forged_cross_domain_certificate_passes_tls_but_not_client_authentication(
    broker: Broker, ca: DevCA, other_ca: DevCA
) -> None:
    """With both bundles loaded, TLS accepts a b-signed leaf claiming spiffe://example.org/...; the service not."""
    reply = await request(client_context(forged_svid(other_ca, str(CLIENT_ID)), ca), "GET", broker.url + "/healthz")
    assert reply.status == 200  # the handshake succeeded
    reply = await request(
        client_context(forged_svid(other_ca, str(CLIENT_ID)), ca),
        "POST",
        broker.url + "/token",
        data=form(**CC),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (reply.status, reply.body["error"]) == (401, "invalid_client")
    assert "chain_verification_failed" in reply.body["error_description"]


async def test_federated_client_with_own_domain_certificate_is_authenticated(
    broker: Broker, ca: DevCA, other_ca: DevCA
) -> None:
    """A genuine other.org SVID authenticates (and is then refused by policy, not by TLS or authentication)."""
    svid = other_ca.issue_x509_svid(SpiffeId.parse("spiffe://other.org/ns/shop/sa/web"), ttl=600)
    reply = await request(client_context(svid, ca), "POST", broker.url + "/token", data=CC)
    assert (reply.status, reply.body["error"]) == (400, "invalid_target")


async def test_random_bodies_never_yield_5xx_or_token(broker: Broker, ca: DevCA) -> None:
    """Seeded garbage: random bytes, random parameter soups built from the endpoint's own vocabulary."""
    rng = random.Random(8693)
    names = [
        "grant_type",
        "audience",
        "resource",
        "scope",
        "client_id",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "requested_token_type",
        "",
        "=",
        "%",
        "%zz",
        "\\x00",
    ]
    values = [GRANT_TOKEN_EXCHANGE, GRANT_CLIENT_CREDENTIALS, TOKEN_TYPE_JWT, API, str(CLIENT_ID), "", "%ff",
              "a" * 300, "x.y.z", "\\u0000", "%00", "+", "é"]  # fmt: skip
    bodies: list[bytes] = [rng.randbytes(rng.randrange(0, 200)) for _ in range(10)]
    for _ in range(30):
        pairs = [f"{rng.choice(names)}={rng.choice(values)}" for _ in range(rng.randrange(0, 8))]
        bodies.append("&".join(pairs).encode())
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    before = broker.snapshot()
    for body in bodies:
        reply = await request(ctx, "POST", broker.url + "/token", data=body, headers=headers)
        assert reply.status < 500, (body, reply.body)
        if reply.status == 200:  # a random soup may be a valid client_credentials request: it must be one
            assert b"grant_type=client_credentials" in body
            before = (before[0] + 1, *before[1:])
        else:
            assert "access_token" not in reply.body
    assert broker.snapshot() == before
