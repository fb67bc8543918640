"""One client assertion, 1,000 concurrent token requests: exactly one gets a token (RFC 7523 §3 item 7).

A registered ``private_key_jwt`` client (no certificate; ``[assertions] allow_bearer_tokens``, so neither mTLS nor
DPoP is needed to get a token) signs ONE assertion, and 1,000 requests carrying it arrive at once: on one replica
(the embedded SQLite store), and spread over two replicas on one PostgreSQL database, where the replay cache's
insert-if-absent must hold across processes. Every other request is refused ``invalid_client``: nothing else (no
``temporarily_unavailable``, no 500) is an acceptable answer under this load.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.jose.jwk import public_jwk
from broker.testing import API, WEB_ID
from tests.integration.replicas import BROKER_CLI, ISSUER, Replica, ReplicaSet, token_claims
from tests.jose_helpers import encode
from tests.postgres import PostgresCluster, running_cluster

REQUESTS = 1_000
CLIENT_ID = "orders-batch"
KID = "orders-batch-1"
CONFIG = "[assertions]\nenabled = true\nallow_bearer_tokens = true\n"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def register_client(store_url: str, root: Path) -> ec.EllipticCurvePrivateKey:
    """Migrate the store and register :data:`CLIENT_ID` (acting as WEB_ID) with a new ES256 key, before any start."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = root / "client.jwks"
    jwks.write_text(json.dumps({"keys": [{**public_jwk(key.public_key()), "kid": KID, "alg": "ES256"}]}))
    for args in (
        ["store", "migrate", "--store", store_url],
        ["clients", "add", "--store", store_url, "--client-id", CLIENT_ID, "--spiffe-id", WEB_ID,
         "--jwks-file", str(jwks)],
    ):  # fmt: skip
        result = subprocess.run([*BROKER_CLI, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{args[:2]}: {result.stdout}{result.stderr}"
    return key


def one_assertion(key: ec.EllipticCurvePrivateKey) -> str:
    now = int(time.time())
    claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ISSUER, "iat": now, "exp": now + 30,
              "jti": secrets.token_urlsafe(16)}  # fmt: skip
    return encode({"alg": "ES256", "kid": KID, "typ": "JWT"}, claims, key)


async def send_all(replicas: list[Replica], trust: ssl.SSLContext, assertion: str) -> list[tuple[int, str]]:
    """:data:`REQUESTS` token requests carrying ``assertion``, round-robin over ``replicas``, all in flight at once;
    each answer's status and ``access_token`` or ``error``."""
    form = {"grant_type": "client_credentials", "audience": API, "scope": "orders:read",
            "client_assertion_type": JWT_BEARER, "client_assertion": assertion}  # fmt: skip
    connector = aiohttp.TCPConnector(ssl=trust, limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    gate = asyncio.Event()

    async def request(replica: Replica) -> tuple[int, str]:
        await gate.wait()
        async with session.post(f"{replica.url}/token", data=form) as response:
            body = await response.json()
            return response.status, str(body.get("access_token") or body.get("error"))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(request(replicas[n % len(replicas)])) for n in range(REQUESTS)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)


def server_trust(replicas: ReplicaSet) -> ssl.SSLContext:
    """TLS trusting the dev CA, without a client certificate (the assertion is the only credential)."""
    context = ssl.create_default_context(cadata=replicas.ca.x509_bundle().to_pem().decode())
    context.check_hostname = False
    return context


def check_exactly_one_token(answers: list[tuple[int, str]], replicas: ReplicaSet) -> None:
    tally = Counter((status, value if status != 200 else "token") for status, value in answers)
    assert tally[(200, "token")] == 1, f"{tally}\n{[r.log_tail() for r in replicas.replicas]}"
    assert tally[(401, "invalid_client")] == REQUESTS - 1, tally
    (token,) = [value for status, value in answers if status == 200]
    claims = token_claims(token)
    assert (claims["sub"], claims["client_id"], claims["aud"]) == (WEB_ID, CLIENT_ID, API)


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sb-replay-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_one_assertion_sent_1000_times_at_once_to_one_replica_gets_one_token(root: Path) -> None:
    store_url = f"sqlite://{root}/broker.db"
    key = register_client(store_url, root)
    replicas = ReplicaSet(store_url=store_url, config=CONFIG)
    try:
        started = replicas.start("a")
        answers = asyncio.run(send_all(started, server_trust(replicas), one_assertion(key)))
        check_exactly_one_token(answers, replicas)
    finally:
        replicas.close()


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.mark.postgres
def test_one_assertion_sent_1000_times_at_once_over_two_replicas_on_postgres_gets_one_token(
    postgres_cluster: PostgresCluster, root: Path
) -> None:
    store_url = postgres_cluster.url(postgres_cluster.create_database())
    key = register_client(store_url, root)
    replicas = ReplicaSet(store_url=store_url, config=CONFIG)
    try:
        started = replicas.start("a", "b")
        answers = asyncio.run(send_all(started, server_trust(replicas), one_assertion(key)))
        check_exactly_one_token(answers, replicas)
    finally:
        replicas.close()
