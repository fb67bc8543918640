"""The parts of ``spiffe-broker dev``, started in one event loop and stopped in reverse order.

The dev Workload API serves the invoking user's workload over the real gRPC Workload API (attested by uid): the
sidecar, ``spiffe-broker token`` and ``spiffe-broker call`` get their SVIDs from it exactly as from a SPIRE agent.
The token service and the demo API run in this process as the same uid, so they cannot be told apart by Unix
attestation; they take their SVIDs straight from the same dev CA (``spiffe://<td>/spiffe-broker`` and
``spiffe://<td>/demo-api``), rotated at half-life like the Workload API's. Their SVIDs also carry the DNS and IP
SANs ``localhost``, ``127.0.0.1`` and the configured listen host, so a stock HTTPS client given the bundle
(``STATE_DIR/bundle.pem``) can do discovery: ``curl --cacert bundle.pem https://127.0.0.1:PORT/.well-known/...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from broker._files import private_dir, write_private_file
from broker.config import BrokerSettings
from broker.devtools.demo_api import start_demo_api
from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import RegistrationEntry
from broker.devtools.workload_api.server import WorkloadApiServer
from broker.devtools.workload_api.statedir import open_dev_state
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.server.stateful_service import start_stateful_token_service
from broker.sidecar.service import DEFAULT_BROKER_ID_PATH, start_sidecar
from broker.tokens.policy import FilePolicyStore

log = logging.getLogger(__name__)

WORKLOAD_PATH = "/workload"
DEMO_API_PATH = "/demo-api"
DEMO_SCOPE = "hello:read"
SERVICE_SVID_TTL = 3600.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
BUNDLE_FILE = "bundle.pem"


@dataclass(frozen=True)
class DevStack:
    """Where each part of the dev stack listens."""

    trust_domain: TrustDomain
    workload_api: str
    workload_id: SpiffeId
    issuer: str
    sidecar_socket: Path
    sidecar_http_port: int | None
    demo_api_url: str
    demo_audience: str
    policy_file: Path
    state_dir: Path
    bundle_file: Path
    metrics: dict[str, str] = field(default_factory=dict)  # part -> its /metrics URL ([metrics] port set)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dev_policy(workload_id: SpiffeId, demo_audience: str) -> str:
    """The dev policy: the invoking user's workload may reach the demo API with the demo scope."""
    document = {
        "rules": [
            {
                "spiffe_id": str(workload_id),
                "audiences": [demo_audience],
                "scopes": [DEMO_SCOPE],
                "max_token_lifetime": 300,
            }
        ]
    }
    return "# spiffe-broker dev policy (default deny; edit me: reloaded on change)\n" + yaml.safe_dump(document)


def server_names(host: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses for a dev server's SVID: loopback by name and number, plus its listen host.

    A wildcard listen address (``0.0.0.0``, ``::``) names no host and is left out.
    """
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for name in dict.fromkeys([*LOOPBACK_NAMES, host]):
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            dns_names.append(name)
            continue
        if not address.is_unspecified:
            ip_addresses.append(str(address))
    return dns_names, ip_addresses


def _serving_ca(ca: DevCA, host: str) -> DevCA:
    dns_names, ip_addresses = server_names(host)
    return ca.with_server_names(dns_names=dns_names, ip_addresses=ip_addresses)


def _runtime_dir(stack: contextlib.AsyncExitStack) -> Path:
    """A private (0700) directory with a short path for the sockets not configured; removed on exit."""
    path = Path(tempfile.mkdtemp(prefix="spiffe-broker-", dir="/tmp"))
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


async def _rotate_at_half_life(source: InMemorySvidSource) -> None:
    while True:
        leaf = source.x509_svid().leaf
        lifetime = leaf.not_valid_after_utc.timestamp() - leaf.not_valid_before_utc.timestamp()
        await asyncio.sleep(max(1.0, lifetime / 2))
        source.rotate()


@dataclass(frozen=True)
class _Layout:
    """What the settings resolve to before anything starts."""

    td: TrustDomain
    state_dir: Path
    server_port: int
    demo_port: int
    issuer: str
    demo_url: str
    demo_audience: str
    workload_id: SpiffeId
    broker_id: SpiffeId
    policy_file: Path


def _layout(settings: BrokerSettings) -> _Layout:
    td = TrustDomain.parse(settings.trust_domain)
    state_dir = settings.state_dir.resolve() / td.name
    server_port = settings.server.port or free_loopback_port()
    demo_port = settings.demo_api.port or free_loopback_port()
    return _Layout(
        td=td,
        state_dir=state_dir,
        server_port=server_port,
        demo_port=demo_port,
        issuer=settings.server.issuer or f"https://{settings.server.host}:{server_port}",
        demo_url=f"https://{settings.demo_api.host}:{demo_port}",
        demo_audience=settings.demo_api.audience or str(SpiffeId(td, DEMO_API_PATH)),
        workload_id=SpiffeId(td, WORKLOAD_PATH),
        broker_id=SpiffeId(td, DEFAULT_BROKER_ID_PATH),
        policy_file=settings.server.policy or state_dir / "policy.yaml",
    )


async def _start_workload_api(
    stack: contextlib.AsyncExitStack,
    settings: BrokerSettings,
    layout: _Layout,
    socket_path: Path,
    metrics: dict[str, str],
) -> WorkloadApiServer:
    """The dev Workload API, with the invoking user's uid registered as the workload."""
    ca, entries = open_dev_state(layout.state_dir / "workload-api", layout.td)
    entry = RegistrationEntry.of(
        str(layout.workload_id),
        [f"unix:uid:{os.getuid()}"],
        x509_svid_ttl=settings.workload_api.x509_svid_ttl,
        jwt_svid_ttl=settings.workload_api.jwt_svid_ttl,
    )
    entries.upsert(entry)
    server = WorkloadApiServer(
        ca=ca, entries=entries, socket_path=socket_path, default_x509_ttl=settings.workload_api.x509_svid_ttl
    )
    await server.start()
    stack.push_async_callback(server.stop)
    if settings.metrics.listens and settings.metrics.port is not None:
        listener = await server.serve_metrics(host=settings.metrics.host, port=settings.metrics.port)
        stack.push_async_callback(listener.aclose)
        metrics["workload_api"] = f"http://{settings.metrics.host}:{listener.port}/metrics"
    return server


async def _start_token_service(
    stack: contextlib.AsyncExitStack, settings: BrokerSettings, layout: _Layout, ca: DevCA, metrics: dict[str, str]
) -> None:
    if not layout.policy_file.exists():
        write_private_file(layout.policy_file, dev_policy(layout.workload_id, layout.demo_audience).encode())
    service_dir = layout.state_dir / "token-service"
    private_dir(service_dir)
    if settings.store.url is None:  # the embedded default, in dev's own state directory
        store = settings.store.model_copy(update={"url": f"sqlite://{service_dir / 'broker.db'}"})
        settings = settings.model_copy(update={"store": store})
    service = await start_stateful_token_service(
        settings,
        source=await _service_source(stack, _serving_ca(ca, settings.server.host), layout.broker_id),
        policy_store=FilePolicyStore(layout.policy_file),
        legacy_dir=service_dir,
        generate_kek_in=service_dir,
        listen_host=settings.server.host,
        listen_port=layout.server_port,
        issuer=layout.issuer,
        health_host="127.0.0.1" if settings.server.health_port is not None else None,
        health_port=settings.server.health_port,
    )
    stack.push_async_callback(service.aclose)
    if service.metrics is not None and service.metrics.listener is not None:
        metrics["token_service"] = f"http://{settings.metrics.host}:{service.metrics.listener.port}/metrics"


async def _start_demo_api(
    stack: contextlib.AsyncExitStack, settings: BrokerSettings, layout: _Layout, ca: DevCA
) -> None:
    demo = await start_demo_api(
        source=await _service_source(
            stack, _serving_ca(ca, settings.demo_api.host), SpiffeId(layout.td, DEMO_API_PATH)
        ),
        issuer=layout.issuer,
        audience=layout.demo_audience,
        token_service_id=layout.broker_id,
        host=settings.demo_api.host,
        port=layout.demo_port,
    )
    stack.push_async_callback(demo.aclose)


async def _start_sidecar(
    stack: contextlib.AsyncExitStack,
    settings: BrokerSettings,
    layout: _Layout,
    address: str,
    socket_path: Path,
    metrics: dict[str, str],
) -> int | None:
    """The sidecar, on the workload's SVID from the Workload API (as against a SPIRE agent)."""
    source = WorkloadApiSvidSource(address=address)
    stack.push_async_callback(source.aclose)
    await source.start()
    await source.wait_ready(10.0)
    sidecar = await start_sidecar(
        source=source,
        token_service_url=layout.issuer,
        token_service_id=layout.broker_id,
        socket_path=socket_path,
        socket_mode=settings.sidecar.socket_mode,
        http_port=settings.sidecar.http_port,
        metrics=settings.metrics,
    )
    stack.push_async_callback(sidecar.aclose)
    if sidecar.metrics is not None:
        metrics["sidecar"] = f"http://{settings.metrics.host}:{sidecar.metrics.port}/metrics"
    return sidecar.http_port


@contextlib.asynccontextmanager
async def run_dev_stack(settings: BrokerSettings) -> AsyncIterator[DevStack]:
    """Start every part, yield where they listen, stop them all (also when a start fails)."""
    layout = _layout(settings)
    async with contextlib.AsyncExitStack() as stack:
        needs_runtime = settings.workload_api.socket is None or settings.sidecar.socket is None
        runtime = _runtime_dir(stack) if needs_runtime else layout.state_dir
        api_socket = settings.workload_api.socket or runtime / "api.sock"
        sidecar_socket = settings.sidecar.socket or runtime / "token.sock"
        metrics: dict[str, str] = {}
        workload_api = await _start_workload_api(stack, _metrics_port(settings, 0), layout, api_socket, metrics)
        await _start_token_service(stack, _metrics_port(settings, 1), layout, workload_api.ca, metrics)
        await _start_demo_api(stack, settings, layout, workload_api.ca)
        http_port = await _start_sidecar(
            stack, _metrics_port(settings, 2), layout, workload_api.address, sidecar_socket, metrics
        )
        bundle_file = layout.state_dir / BUNDLE_FILE
        write_private_file(bundle_file, workload_api.ca.ca_cert.public_bytes(Encoding.PEM))
        yield DevStack(
            trust_domain=layout.td,
            workload_api=workload_api.address,
            workload_id=layout.workload_id,
            issuer=layout.issuer,
            sidecar_socket=sidecar_socket,
            sidecar_http_port=http_port,
            demo_api_url=layout.demo_url,
            demo_audience=layout.demo_audience,
            policy_file=layout.policy_file,
            state_dir=layout.state_dir,
            bundle_file=bundle_file,
            metrics=metrics,
        )


def _metrics_port(settings: BrokerSettings, offset: int) -> BrokerSettings:
    """Each part its own ``/metrics`` port: ``[metrics] port`` + ``offset`` (0: each a free port)."""
    port = settings.metrics.port
    if not port:
        return settings
    return settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"port": port + offset})})


async def _service_source(stack: contextlib.AsyncExitStack, ca: DevCA, spiffe_id: SpiffeId) -> InMemorySvidSource:
    source = InMemorySvidSource(ca, spiffe_id, x509_ttl=SERVICE_SVID_TTL)
    rotation = asyncio.create_task(_rotate_at_half_life(source))

    async def stop() -> None:
        rotation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rotation
        await source.aclose()

    stack.push_async_callback(stop)
    return source
