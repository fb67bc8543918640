"""The verifier with a revocation feed follower: revoked tokens, keys and quarantined subjects are refused once the
feed says so, with nothing but "revoked"; a stale feed that fails closed is 503 at the resource server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from broker.devtools.devca import DevCA
from broker.errors import InvalidTokenError
from broker.events.revocations import KeyRevoked, SubjectPattern, SubjectQuarantined, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.verify import AccessTokenVerifier, RevocationFeedFollower, StaticJwksProvider, bearer_auth_middleware
from broker.verify.feed import RevocationFeedStaleError
from broker.verify.middleware import VERIFIED_TOKEN
from tests.unit.server.feed_helpers import CLIENT_ID, FeedServer, feed_server, later, until
from tests.unit.server.token_service_helpers import BROKER_ID
from tests.unit.verify.verify_helpers import AUDIENCE, ISSUER, Signer, claims_for

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
SUBJECT = "spiffe://example.org/ns/shop/sa/web"


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def cert_der(ca: DevCA) -> bytes:
    svid = ca.issue_x509_svid(SpiffeId.parse(SUBJECT), ttl=600)
    return svid.leaf.public_bytes(serialization.Encoding.DER)


@pytest.fixture
async def server(ca: DevCA) -> AsyncIterator[FeedServer]:
    async with feed_server(ca) as running:
        yield running


@pytest.fixture
async def follower(server: FeedServer) -> AsyncIterator[RevocationFeedFollower]:
    source = InMemorySvidSource(server.ca, CLIENT_ID)
    feed = RevocationFeedFollower.over_mtls(issuer=server.issuer, source=source, server_id=BROKER_ID, stale_after=0.5)
    async with feed:
        assert await feed.wait_synced(5)
        yield feed


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"sub": str(request[VERIFIED_TOKEN].spiffe_id)})


def token(signer: Signer, cert_der: bytes, **claims: Any) -> str:
    now = int(time.time())
    return signer.sign(claims_for(cert_der, iat=now - 5, exp=now + 300, **claims))


def verifier_for(signer: Signer, follower: RevocationFeedFollower) -> AccessTokenVerifier:
    jwks = StaticJwksProvider.from_document({"keys": [signer.jwk(alg="ES256")]})
    return AccessTokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, revocations=follower)


async def test_a_revoked_jti_is_refused_once_the_event_arrives_and_others_are_not(
    server: FeedServer, follower: RevocationFeedFollower, cert_der: bytes
) -> None:
    signer = Signer()
    verifier = verifier_for(signer, follower)
    doomed, kept = token(signer, cert_der, jti="doomed"), token(signer, cert_der, jti="kept")
    assert (await verifier.verify(doomed, cert_der)).jti == "doomed"

    await server.append([TokenRevoked("doomed", later())])
    await until(lambda: follower.index.seq == 1)

    with pytest.raises(InvalidTokenError) as refused:
        await verifier.verify(doomed, cert_der)
    assert refused.value.description == "access token revoked"
    assert (await verifier.verify(kept, cert_der)).jti == "kept"


async def test_a_quarantined_subject_and_a_revoked_key_are_refused_as_revoked(
    server: FeedServer, follower: RevocationFeedFollower, cert_der: bytes
) -> None:
    signer, other_key = Signer(kid="key-1"), Signer(kid="key-2")
    tokens = [token(signer, cert_der), token(other_key, cert_der)]
    verifiers = [verifier_for(signer, follower), verifier_for(other_key, follower)]
    at = datetime.now(UTC)
    pattern = SubjectPattern.parse("spiffe://example.org/ns/shop/*")

    await server.append([KeyRevoked("key-2", later())])
    await until(lambda: follower.index.seq == 1)
    with pytest.raises(InvalidTokenError, match=r"^access token revoked$"):
        await verifiers[1].verify(tokens[1], cert_der)
    assert await verifiers[0].verify(tokens[0], cert_der)
    await server.append([SubjectQuarantined(pattern, at, None, at + timedelta(hours=1))])
    await until(lambda: follower.index.seq == 2)

    with pytest.raises(InvalidTokenError, match=r"^access token revoked$"):
        await verifiers[0].verify(tokens[0], cert_der)


async def test_a_forged_token_naming_a_revoked_jti_is_refused_for_its_signature_first(
    server: FeedServer, follower: RevocationFeedFollower, cert_der: bytes
) -> None:
    verifier = verifier_for(Signer(), follower)
    await server.append([TokenRevoked("doomed", later())])
    await until(lambda: follower.index.seq == 1)

    with pytest.raises(InvalidTokenError, match="signature"):  # revocation state is not disclosed to forgers
        await verifier.verify(token(Signer(), cert_der, jti="doomed"), cert_der)


async def test_a_stale_feed_that_fails_closed_refuses_every_token(
    server: FeedServer, follower: RevocationFeedFollower, cert_der: bytes
) -> None:
    signer = Signer()
    verifier = verifier_for(signer, follower)
    good = token(signer, cert_der)
    await server.runner.cleanup()  # the broker goes away

    await until(follower.stale)

    with pytest.raises(RevocationFeedStaleError):
        await verifier.verify(good, cert_der)


class StaleVerifier:
    async def verify(self, token: str, client_cert_der: bytes | None) -> Any:
        raise RevocationFeedStaleError()


async def test_the_middleware_answers_a_stale_feed_with_503_and_retry_after(aiohttp_client: ClientFactory) -> None:
    verifier: Any = StaleVerifier()
    app = web.Application(middlewares=[bearer_auth_middleware(verifier)])
    app.router.add_get("/", whoami)
    client = await aiohttp_client(app)

    response = await client.get("/", headers={"Authorization": "Bearer abc"})

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    body = await response.json()
    assert body["error"] == "temporarily_unavailable"
    assert "revocation feed is stale" in body["error_description"]
