"""Workload attestation by Unix peer credentials, as SPIRE's ``unix`` workload attestor does it.

The kernel records the credentials of the process that called ``connect()`` on a Unix socket; ``SO_PEERCRED``
(unix(7)) returns them as ``struct ucred {pid, uid, gid}`` with the *effective* uid and gid. They cannot be
forged by the client, which is why the Workload API socket may be connectable by everyone: attestation, not
file permissions, decides what a caller gets (SPIFFE Workload Endpoint §5: no direct client authentication,
out-of-band checks such as kernel socket state instead; SPIRE's agent socket is world-connectable likewise).

Only the uid and gid are used. The pid is logged but never trusted, so there is no pid-reuse race to guard.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from broker.devtools.workload_api.entries import RegistrationEntry, Selector
from broker.identity.errors import IdentityError

__all__ = ["AttestationError", "PeerCredentials", "matching_entries", "peer_credentials", "socket_credentials"]

_UCRED = struct.Struct("3i")  # struct ucred: pid_t pid; uid_t uid; gid_t gid (all 32-bit on Linux)


class AttestationError(IdentityError):
    """The caller's credentials could not be read; the caller gets no identity."""

    reason = "attestation_failed"


class _PeerSocket(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The connecting process as the kernel saw it at ``connect()``."""

    pid: int
    uid: int
    gid: int

    def selectors(self) -> frozenset[Selector]:
        """The ``unix`` selectors this caller presents: ``unix:uid:<uid>`` and ``unix:gid:<gid>``."""
        return frozenset({Selector("uid", self.uid), Selector("gid", self.gid)})


def socket_credentials(sock: _PeerSocket) -> PeerCredentials:
    """Read ``SO_PEERCRED`` from a connected Unix socket."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError as exc:
        raise AttestationError(f"SO_PEERCRED failed: {exc.strerror}") from None
    pid, uid, gid = _UCRED.unpack(raw)
    if uid < 0 or gid < 0:  # the kernel reports overflow ids, never negatives; anything else is not a peer
        raise AttestationError("SO_PEERCRED returned no credentials")
    return PeerCredentials(pid, uid, gid)


def peer_credentials(peer: Any) -> PeerCredentials:
    """Credentials of the caller of a grpclib server stream, from ``stream.peer``.

    grpclib 0.4.9's ``Peer`` offers ``addr()`` and ``cert()`` but not the socket, so this reads its transport
    (``peer._transport.get_extra_info("socket")``); if a grpclib upgrade moves it, attestation fails closed.
    """
    transport = getattr(peer, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or getattr(sock, "family", None) != socket.AF_UNIX:
        raise AttestationError("the connection is not a Unix socket")
    return socket_credentials(sock)


def matching_entries(entries: Iterable[RegistrationEntry], caller: PeerCredentials) -> list[RegistrationEntry]:
    """The entries whose selectors all match the caller, in store order (the first is the default SVID)."""
    selectors = caller.selectors()
    return [entry for entry in entries if entry.matches(selectors)]
