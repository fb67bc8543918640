"""The sidecar's exchange with ``token_binding = "dpop"`` (RFC 9449 §5, §8) against the DPoP-honouring fake."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker.identity.memory import InMemorySvidSource
from broker.jose.jws import parse_compact
from broker.oauth.binding import Jkt
from broker.oauth.dpop import check_proof
from broker.oauth.dpop_nonce import NonceSource
from broker.sidecar.dpop import NonceMemory, SvidProofSigner, choose_algorithm, current_jkt
from broker.sidecar.errors import DpopKeyError, TokenServiceRefusedError, TokenServiceUnavailableError
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.retry import RetryPolicy
from tests.unit.sidecar.dpop_helpers import RunningDpopEndpoint, start_dpop_endpoint
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID


@pytest.fixture
async def endpoints(broker_source: InMemorySvidSource) -> AsyncIterator[list[RunningDpopEndpoint]]:
    running: list[RunningDpopEndpoint] = []
    yield running
    for endpoint in running:
        await endpoint.stop()


async def dpop_client(
    source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint], broker: InMemorySvidSource, **options: Any
) -> tuple[TokenServiceClient, RunningDpopEndpoint]:
    endpoint = await start_dpop_endpoint(broker, **options)
    endpoints.append(endpoint)
    client = TokenServiceClient(
        source=source,
        issuer=endpoint.script.issuer,
        server_id=BROKER_ID,
        retry=RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0),
        dpop=SvidProofSigner(source),
        timeout=2.0,
    )
    return client, endpoint


def nonces() -> NonceSource:
    return NonceSource(secrets.token_bytes(32))


async def test_token_is_bound_to_the_svid_key_over_mtls(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(workload_source, endpoints, broker_source)
    result = await client.exchange(API, None)
    svid = workload_source.x509_svid()
    jkt = Jkt.of_public_key(svid.private_key.public_key()).value
    assert (result.bound_jkt, result.bound_x5t, result.token_type) == (jkt, None, "DPoP")
    assert endpoint.script.client_x5ts == [svid.x5t_s256()]  # still authenticated with the X.509-SVID
    proof = parse_compact(endpoint.script.raw_proofs[0])
    assert (proof.header["typ"], proof.header["alg"]) == ("dpop+jwt", "ES256")
    assert (proof.payload["htm"], proof.payload["htu"]) == ("POST", f"{endpoint.script.issuer}/token")
    assert "ath" not in proof.payload and "nonce" not in proof.payload
    assert current_jkt(workload_source) == jkt
    await client.aclose()


async def test_nonce_challenge_is_answered_once_and_the_nonce_kept(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(workload_source, endpoints, broker_source, nonces=nonces())
    await client.exchange(API, None)
    assert endpoint.script.refusals == ["use_dpop_nonce"]
    assert endpoint.script.posts == 2
    assert client.dpop_nonce.value == endpoint.script.proofs[0].nonce
    await client.exchange(API, "orders:read")  # the kept nonce goes out at once
    assert endpoint.script.posts == 3
    assert endpoint.script.refusals == ["use_dpop_nonce"]
    await client.aclose()


async def test_a_nonce_from_any_response_is_used(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(
        workload_source, endpoints, broker_source, nonces=nonces(), nonce_on_metadata=True
    )
    await client.exchange(API, None)
    assert (endpoint.script.posts, endpoint.script.refusals) == (1, [])
    await client.aclose()


async def test_a_second_nonce_refusal_passes_through_without_a_loop(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(workload_source, endpoints, broker_source, nonces=nonces(), fickle_nonces=True)
    with pytest.raises(TokenServiceRefusedError) as caught:
        await client.exchange(API, None)
    assert caught.value.error == "use_dpop_nonce"
    assert endpoint.script.posts == 2  # one retry with the new nonce, no more
    assert client.reachable
    await client.aclose()


async def test_a_server_without_dpop_is_reported_not_trusted(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(workload_source, endpoints, broker_source, ignore_dpop=True)
    with pytest.raises(TokenServiceUnavailableError, match="did not bind the token to the DPoP key"):
        await client.exchange(API, None)
    assert endpoint.script.posts == 1  # not retried
    await client.aclose()


async def test_a_server_taking_no_algorithm_of_the_key_is_unavailable(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, endpoint = await dpop_client(workload_source, endpoints, broker_source, advertised=["PS256"])
    with pytest.raises(TokenServiceUnavailableError, match=r"no DPoP algorithm the X\.509-SVID key can sign with"):
        await client.exchange(API, None)
    assert endpoint.script.posts == 0
    await client.aclose()


async def test_after_rotation_the_proof_and_the_token_use_the_new_key(
    workload_source: InMemorySvidSource, broker_source: InMemorySvidSource, endpoints: list[RunningDpopEndpoint]
) -> None:
    client, _ = await dpop_client(workload_source, endpoints, broker_source)
    first = await client.exchange(API, None)
    workload_source.rotate()
    second = await client.exchange(API, None)
    assert first.bound_jkt != second.bound_jkt == current_jkt(workload_source)
    await client.aclose()


@pytest.mark.parametrize(
    ("key", "advertised", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), None, "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), None, "ES384"),
        (ec.generate_private_key(ec.SECP521R1()), ["ES512"], "ES512"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), None, "PS256"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), ["RS256", "ES256"], "RS256"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), ["RS512", "PS384"], "PS384"),
    ],
    ids=["p256", "p384", "p521-advertised", "rsa-default-ps256", "rsa-rs256-only", "rsa-preference-order"],
)
def test_algorithm_follows_the_key_and_the_metadata(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, advertised: list[str] | None, alg: str
) -> None:
    assert choose_algorithm(key, advertised) == alg


def test_a_key_that_cannot_sign_proofs_is_refused() -> None:
    with pytest.raises(DpopKeyError):
        choose_algorithm(ec.generate_private_key(ec.SECP256R1()), ["RS256"])

    class Ed25519Svid:
        private_key = ed25519.Ed25519PrivateKey.generate()

    class Source:
        def x509_svid(self) -> Any:
            return Ed25519Svid()

    with pytest.raises(DpopKeyError, match="cannot sign DPoP proofs"):
        SvidProofSigner(Source()).sign(htm="GET", htu="https://api.example.org/")


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("abc-123_.~", True),
        (None, False),
        ("", False),
        ('with"quote', False),
        ("with space", False),
        ("x" * 513, False),
    ],
    ids=["nqchars", "absent", "empty", "quote", "space", "too-long"],
)
def test_only_rfc9449_nonces_are_remembered(header: str | None, kept: bool) -> None:
    memory = NonceMemory()
    assert memory.remember(header) is kept
    assert memory.value == (header if kept else None)


@pytest.mark.parametrize(("advertised", "alg"), [(None, "PS256"), (["RS256"], "RS256")], ids=["ps256", "rs256"])
def test_an_rsa_svid_key_signs_proofs_a_server_accepts(advertised: list[str] | None, alg: str) -> None:
    class RsaSvid:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    class Source:
        def x509_svid(self) -> Any:
            return RsaSvid()

    signed = SvidProofSigner(Source()).sign(htm="GET", htu="https://api.example.org/x", advertised=advertised)
    proof = check_proof(signed.proof, htm="GET", htu="https://api.example.org/x", now=time.time(), leeway=5,
                        max_age=60, algorithms=[alg])  # fmt: skip
    assert (proof.alg, proof.jkt) == (alg, signed.jkt)
