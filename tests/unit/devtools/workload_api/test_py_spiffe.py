"""py-spiffe 0.3.2's blocking clients against the embedded Workload API (server in a background thread)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from spiffe import JwtSource, WorkloadApiClient, X509Source
from spiffe.spiffe_id.spiffe_id import TrustDomain as PyTrustDomain
from spiffe.workloadapi.errors import FetchX509SvidError
from spiffe.workloadapi.x509_context import X509Context

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, RegistrationEntry, WorkloadApiServer, WorkloadApiThread

from ._support import me, other_uid

PY_TD = PyTrustDomain("example.org")


@pytest.fixture
def entries() -> InMemoryEntryStore:
    return InMemoryEntryStore([me("/web", x509_svid_ttl=3600)])


@pytest.fixture
def server(ca: DevCA, entries: InMemoryEntryStore, sock_dir: Path) -> Iterator[WorkloadApiServer]:
    api = WorkloadApiServer(ca=ca, entries=entries, socket_path=sock_dir / "agent.sock", entries_poll_interval=0.05)
    with WorkloadApiThread(api) as running:
        yield running


def test_x509_source_gets_svid_and_bundle(server: WorkloadApiServer, ca: DevCA) -> None:
    source = X509Source(socket_path=server.address, timeout_in_seconds=5)
    try:
        context = source.get_x509_context()
        bundle = source.get_bundle_for_trust_domain(PY_TD)
    finally:
        source.close()
    assert str(context.default_svid.spiffe_id) == "spiffe://example.org/web"
    assert bundle is not None and [c.serial_number for c in bundle.x509_authorities] == [ca.ca_cert.serial_number]


def test_jwt_source_fetches_svid_and_bundle(server: WorkloadApiServer, ca: DevCA) -> None:
    source = JwtSource(socket_path=server.address, timeout_in_seconds=5)
    try:
        svid = source.fetch_svid(audience={"https://api.example.org"})
        bundle = source.get_bundle_for_trust_domain(PY_TD)
    finally:
        source.close()
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
    assert svid.audience == {"https://api.example.org"}
    assert bundle is not None and bundle.get_jwt_authority(ca.jwt_kid) is not None


def test_client_validates_jwt_svid_through_the_api(server: WorkloadApiServer) -> None:
    with WorkloadApiClient(socket_path=server.address, default_timeout=5) as client:
        token = client.fetch_jwt_svid(audience={"aud"}).token
        validated = client.validate_jwt_svid(token, "aud")
    assert str(validated.spiffe_id) == "spiffe://example.org/web"


def test_client_with_no_entry_is_refused(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([RegistrationEntry.of("spiffe://example.org/web", [f"unix:uid:{other_uid()}"])])
    api = WorkloadApiServer(ca=ca, entries=entries, socket_path=sock_dir / "agent.sock")
    with (
        WorkloadApiThread(api),
        WorkloadApiClient(socket_path=api.address, default_timeout=5) as client,
        pytest.raises(FetchX509SvidError, match="PERMISSION_DENIED"),
    ):
        client.fetch_x509_svid()


def test_rotation_reaches_x509_source_before_expiry(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/web", x509_svid_ttl=3)])
    api = WorkloadApiServer(ca=ca, entries=entries, socket_path=sock_dir / "agent.sock")
    updated = threading.Event()
    with WorkloadApiThread(api):
        source = X509Source(socket_path=api.address, timeout_in_seconds=5)
        try:
            old = source.get_x509_context().default_svid.leaf
            source.subscribe_for_updates(updated.set)
            assert updated.wait(timeout=5)
            arrived = time.time()
            new = source.get_x509_context().default_svid.leaf
        finally:
            source.close()
    assert new.serial_number != old.serial_number
    assert arrived < old.not_valid_after_utc.timestamp()


def test_stream_carries_every_svid_in_each_update(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/a"), me("/b", f"unix:gid:{os.getegid()}")])
    api = WorkloadApiServer(ca=ca, entries=entries, socket_path=sock_dir / "agent.sock")
    contexts: queue.Queue[X509Context] = queue.Queue()
    with WorkloadApiThread(api), WorkloadApiClient(socket_path=api.address) as client:
        handle = client.stream_x509_contexts(contexts.put, lambda error: None, retry_connect=False)
        try:
            first = contexts.get(timeout=5)
            api.rotate_now()
            second = contexts.get(timeout=5)
        finally:
            handle.cancel()
    for context in (first, second):
        assert [str(s.spiffe_id) for s in context.x509_svids] == ["spiffe://example.org/a", "spiffe://example.org/b"]
    assert first.default_svid.leaf.serial_number != second.default_svid.leaf.serial_number
