"""The admin API mounted on a real token service app, served over real TLS on loopback (SVIDs from dev CAs).

Trust domains: ``example.org`` (the broker, its admin and other workloads) and ``other.org`` (federated: its
bundle is loaded, so its certificates pass the handshake and must be refused by the gate).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.admin.app import add_admin_routes
from broker.admin.client import AdminClient
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.spiffetls.context import SourceSSLContext, client_ssl_context, server_ssl_context
from broker.server.app import build_token_app
from broker.tokens.keys import FileKeyStore
from broker.tokens.policy import FilePolicyStore
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit, chained
from tests.unit.server.token_service_helpers import BROKER_ID, ISSUER, POLICY

ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
WORKLOAD_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
FOREIGN_ADMIN_ID = SpiffeId.parse("spiffe://other.org/ops/admin")  # same path, another trust domain


@dataclass
class AdminService:
    url: str
    keys: FakeKeyAdmin
    audit: RecordingAudit
    reader: FakeAuditReader


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def other_ca() -> DevCA:
    return DevCA.ephemeral("other.org")


@pytest.fixture
def source(ca: DevCA, other_ca: DevCA) -> InMemorySvidSource:
    return InMemorySvidSource(ca, BROKER_ID, federated={TrustDomain("other.org"): other_ca})


@pytest.fixture
async def admin_service(source: InMemorySvidSource, tmp_path: Path) -> AsyncIterator[AdminService]:
    """The token service's TLS app with the admin API mounted, as ``start_token_service`` serves it."""
    state_dir = tmp_path
    (state_dir / "policy.yaml").write_text(POLICY)
    app = build_token_app(
        source=source,
        policy_store=FilePolicyStore(state_dir / "policy.yaml"),
        key_store=FileKeyStore(state_dir),
        issuer=ISSUER,
    )
    keys, audit = FakeKeyAdmin(), RecordingAudit()
    reader = FakeAuditReader(chained([("token.issued", {"sub": str(WORKLOAD_ID)}), ("key.rotated", {"kid": "k-live"})]))
    add_admin_routes(
        app,
        admins=frozenset({ADMIN_ID}),
        bundles=source.x509_bundles,
        keys=keys,
        store=FakeStoreInfo(),
        audit_reader=reader,
        audit=audit,
    )
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield AdminService(f"https://127.0.0.1:{port}", keys, audit, reader)
    finally:
        await runner.cleanup()
        ssl_context.detach()


@pytest.fixture
def admin_context(ca: DevCA, other_ca: DevCA) -> Iterator[SourceSSLContext]:
    """The admin's mTLS context, expecting the broker's SPIFFE ID."""
    source = InMemorySvidSource(ca, ADMIN_ID, federated={TrustDomain("other.org"): other_ca})
    context = client_ssl_context(source, server_id=BROKER_ID)
    yield context
    context.detach()


@pytest.fixture
async def admin_client(admin_service: AdminService, admin_context: SourceSSLContext) -> AsyncIterator[AdminClient]:
    async with AdminClient(admin_service.url, admin_context) as client:
        yield client
