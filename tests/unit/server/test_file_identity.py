"""The token service on identity from files (:mod:`broker.identity.files`) instead of the Workload API."""

from __future__ import annotations

from pathlib import Path

from broker.devtools.devca import DevCA
from broker.identity.files import FileSvidSource
from broker.server.service import start_token_service
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, Policy
from tests.unit.identity.file_identity import TD, write_identity
from tests.unit.server.token_service_helpers import CLIENT_ID, ISSUER, client_context, request


async def test_token_service_runs_on_file_identity(tmp_path: Path) -> None:
    ca = DevCA.ephemeral(TD)
    source = FileSvidSource(write_identity(tmp_path, ca))
    service = await start_token_service(
        source=source,
        policy_store=InMemoryPolicyStore(Policy(rules=())),
        key_store=InMemoryKeyStore(),
        listen_host="127.0.0.1",
        listen_port=0,
        issuer=ISSUER,
    )
    try:
        ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
        reply = await request(
            ctx,
            "POST",
            f"https://127.0.0.1:{service.port}/token",
            data={"grant_type": "client_credentials", "audience": "https://api"},
        )
    finally:
        await service.aclose()
    assert (reply.status, reply.body["error"]) == (400, "invalid_target")  # authenticated, then denied by policy
