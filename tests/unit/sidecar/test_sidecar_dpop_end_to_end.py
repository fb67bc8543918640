"""End to end: sidecar (``token_binding = "dpop"``) -> DPoP-bound token -> the app's headers -> ``broker.verify``.

The app holds no key: its token comes from ``/v1/token`` and its proofs from ``/v1/dpop-proof``
(:mod:`broker.appclient.dpop`); the resource server is :class:`broker.verify.AccessTokenVerifier` with a
:class:`~broker.verify.DpopPolicy`. Token services: the DPoP-honouring fake (with server nonces, RFC 9449 §8) and
the project's own token service in process with :class:`broker.tokens.dpop.DpopBinding` as its sender constraint.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from broker.appclient import dpop_request_headers, dpop_request_headers_sync, fetch_dpop_proof
from broker.errors import InvalidTokenError, OAuthError, UseDpopNonceError
from broker.identity.memory import InMemorySvidSource
from broker.oauth.dpop import check_proof
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import MemoryReplayCache
from broker.server.service import RunningTokenService, start_token_service
from broker.server.state import SERVICE
from broker.sidecar.dpop import current_jkt
from broker.tokens.dpop import DpopBinding
from broker.tokens.drift import DriftTracker
from broker.tokens.keys import InMemoryKeyStore, jwks
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from broker.verify import AccessTokenVerifier, DpopPolicy, StaticJwksProvider, parse_jwks
from tests.unit.sidecar.dpop_helpers import RunningDpopEndpoint, start_dpop_endpoint
from tests.unit.sidecar.sidecar_helpers import API, POLICY, WEB_ID, Starter, free_port

URL = "https://api.example.org/orders?page=1"
HTU = "https://api.example.org/orders"


@pytest.fixture
async def fake(broker_source: InMemorySvidSource) -> AsyncIterator[RunningDpopEndpoint]:
    endpoint = await start_dpop_endpoint(broker_source, nonces=NonceSource(secrets.token_bytes(32)))
    yield endpoint
    await endpoint.stop()


def token_of(headers: dict[str, str]) -> str:
    scheme, _, token = headers["Authorization"].partition(" ")
    assert scheme == "DPoP"
    return token


async def test_a_sidecar_proof_and_token_pass_the_resource_server(
    start: Starter, workload_source: InMemorySvidSource, fake: RunningDpopEndpoint
) -> None:
    sidecar = await start(workload_source, token_service_url=fake.script.issuer, token_binding="dpop")
    headers = await dpop_request_headers(socket_path=sidecar.socket_path, method="GET", url=URL, audience=API)
    token = token_of(headers)
    assert fake.script.refusals == ["use_dpop_nonce"]  # the token endpoint's nonce round trip happened
    proof = check_proof(headers["DPoP"], htm="GET", htu=URL, now=time.time(), leeway=5, max_age=60,
                        algorithms=["ES256"], access_token=token)  # fmt: skip
    assert proof.jkt == fake.script.proofs[0].jkt
    verifier = fake.script.verifier()
    verified = await verifier.verify_dpop(token, proofs=[headers["DPoP"]], method="GET", uri=URL)
    assert verified.spiffe_id == WEB_ID
    assert verified.claims["cnf"] == {"jkt": proof.jkt}


async def test_the_same_token_is_refused_without_its_proof(
    start: Starter, workload_source: InMemorySvidSource, fake: RunningDpopEndpoint
) -> None:
    sidecar = await start(workload_source, token_service_url=fake.script.issuer, token_binding="dpop")
    headers = await dpop_request_headers(socket_path=sidecar.socket_path, method="GET", url=URL, audience=API)
    token, verifier = token_of(headers), fake.script.verifier()
    cert = workload_source.x509_svid().leaf.public_bytes(Encoding.DER)
    with pytest.raises(InvalidTokenError, match="it is DPoP-bound"):
        await verifier.verify(token, cert)  # as a Bearer token over mTLS with the very SVID
    with pytest.raises(OAuthError):
        await verifier.verify_dpop(token, proofs=[], method="GET", uri=URL)
    with pytest.raises(OAuthError):
        await verifier.verify_dpop(token, proofs=[headers["DPoP"]], method="POST", uri=URL)
    await verifier.verify_dpop(token, proofs=[headers["DPoP"]], method="GET", uri=URL)
    with pytest.raises(OAuthError):  # a proof is single-use (RFC 9449 §11.1)
        await verifier.verify_dpop(token, proofs=[headers["DPoP"]], method="GET", uri=URL)


async def test_a_resource_server_nonce_goes_into_the_next_proof(
    start: Starter, workload_source: InMemorySvidSource, fake: RunningDpopEndpoint
) -> None:
    sidecar = await start(workload_source, token_service_url=fake.script.issuer, token_binding="dpop")
    headers = await dpop_request_headers(socket_path=sidecar.socket_path, method="GET", url=URL, audience=API)
    token = token_of(headers)
    verifier = fake.script.verifier(nonces=NonceSource(secrets.token_bytes(32)))
    with pytest.raises(UseDpopNonceError) as challenge:
        await verifier.verify_dpop(token, proofs=[headers["DPoP"]], method="GET", uri=URL)
    nonce = challenge.value.headers["DPoP-Nonce"]
    proof = await fetch_dpop_proof(socket_path=sidecar.socket_path, method="GET", url=URL, access_token=token,
                                   nonce=nonce)  # fmt: skip
    assert (await verifier.verify_dpop(token, proofs=[proof], method="GET", uri=URL)).spiffe_id == WEB_ID


async def test_after_rotation_the_app_gets_a_token_and_proof_for_the_new_key(
    start: Starter, workload_source: InMemorySvidSource, fake: RunningDpopEndpoint
) -> None:
    sidecar = await start(workload_source, token_service_url=fake.script.issuer, token_binding="dpop")
    before = await dpop_request_headers(socket_path=sidecar.socket_path, method="GET", url=URL, audience=API)
    workload_source.rotate()
    after = await asyncio.to_thread(dpop_request_headers_sync, str(sidecar.socket_path), "GET", URL, API)
    assert token_of(after) != token_of(before)
    verifier = fake.script.verifier()
    await verifier.verify_dpop(token_of(after), proofs=[after["DPoP"]], method="GET", uri=URL)


@dataclass
class InProcessService:
    service: RunningTokenService
    issuer: str
    keys: InMemoryKeyStore

    def verifier(self) -> AccessTokenVerifier:
        provider = StaticJwksProvider(parse_jwks(jwks(self.keys.published_keys())))
        return AccessTokenVerifier(issuer=self.issuer, audience=API, jwks=provider, dpop=DpopPolicy())


@pytest.fixture
async def real_dpop_service(broker_source: InMemorySvidSource) -> AsyncIterator[InProcessService]:
    """The project's stateless token service with DPoP (replay cache in memory) and server nonces (§8)."""
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    nonces = NonceSource(secrets.token_bytes(32))

    def with_dpop(app: web.Application) -> None:
        endpoint = app[SERVICE]
        endpoint.sender_constraint = DpopBinding(token_endpoint=f"{issuer}/token", replay=MemoryReplayCache(),
                                                 drift=DriftTracker(leeway=5.0), nonces=nonces)  # fmt: skip

    keys = InMemoryKeyStore()
    service = await start_token_service(source=broker_source, policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
                                        key_store=keys, listen_host="127.0.0.1", listen_port=port, issuer=issuer,
                                        configure=with_dpop)  # fmt: skip
    yield InProcessService(service, issuer, keys)
    await service.aclose()


async def test_against_the_real_token_service_in_process(
    start: Starter, workload_source: InMemorySvidSource, real_dpop_service: InProcessService
) -> None:
    sidecar = await start(workload_source, token_service_url=real_dpop_service.issuer, token_binding="dpop",
                          follow_revocations=False)  # fmt: skip
    headers = await dpop_request_headers(socket_path=sidecar.socket_path, method="GET", url=URL, audience=API)
    token = token_of(headers)
    verified = await real_dpop_service.verifier().verify_dpop(token, proofs=[headers["DPoP"]], method="GET", uri=URL)
    assert verified.spiffe_id == WEB_ID
    assert verified.claims["cnf"] == {"jkt": current_jkt(workload_source)}  # the SVID key, not the certificate
