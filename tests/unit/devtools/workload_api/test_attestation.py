"""SO_PEERCRED attestation: the kernel's view of the connecting process, failing closed otherwise."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from broker.devtools.workload_api.attestation import (
    AttestationError,
    PeerCredentials,
    matching_entries,
    peer_credentials,
    socket_credentials,
)
from broker.devtools.workload_api.entries import RegistrationEntry, Selector


def test_socket_credentials_report_the_connecting_process() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        creds = socket_credentials(left)
    assert creds == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())


def test_peer_credentials_read_the_grpclib_transport_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = SimpleNamespace(
            _transport=SimpleNamespace(get_extra_info=lambda name: left if name == "socket" else None)
        )
        assert peer_credentials(peer).uid == os.geteuid()


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param(object(), id="no-transport"),
        pytest.param(SimpleNamespace(_transport=SimpleNamespace(get_extra_info=lambda name: None)), id="no-socket"),
    ],
)
def test_peer_credentials_fail_closed_without_a_unix_socket(peer: object) -> None:
    with pytest.raises(AttestationError):
        peer_credentials(peer)


def test_peer_credentials_fail_closed_on_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        peer = SimpleNamespace(_transport=SimpleNamespace(get_extra_info=lambda name: tcp))
        with pytest.raises(AttestationError):
            peer_credentials(peer)


def test_socket_credentials_fail_closed_when_getsockopt_fails() -> None:
    class Broken:
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
            raise OSError(95, "Operation not supported")

    with pytest.raises(AttestationError, match="SO_PEERCRED"):
        socket_credentials(Broken())


def test_caller_selectors_are_its_uid_and_gid() -> None:
    assert PeerCredentials(1, 1000, 100).selectors() == {Selector("uid", 1000), Selector("gid", 100)}


def test_matching_entries_keeps_store_order() -> None:
    entries = [
        RegistrationEntry.of("spiffe://td/b", ["unix:gid:100"]),
        RegistrationEntry.of("spiffe://td/x", ["unix:uid:1"]),
        RegistrationEntry.of("spiffe://td/a", ["unix:uid:1000"]),
    ]
    matched = matching_entries(entries, PeerCredentials(1, 1000, 100))
    assert [str(e.spiffe_id) for e in matched] == ["spiffe://td/b", "spiffe://td/a"]
