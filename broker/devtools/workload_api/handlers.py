"""The Workload API's RPCs, with SPIRE's status codes.

* Every call must carry the metadata ``workload.spiffe.io: true``, else ``InvalidArgument`` (SPIFFE Workload
  Endpoint §3, §6), checked before anything else.
* A request message that cannot be read is answered as grpc-go (and so SPIRE's agent) answers it, per gRPC's
  ``doc/statuscodes.md`` ("Error parsing request proto": ``INTERNAL``; "Compression mechanism used by client not
  supported by the server": ``UNIMPLEMENTED``): a message that is not the method's protobuf, a string field that
  is not UTF-8, a length prefix longer than the data, or a partial prefix is ``INTERNAL``; a compressed message
  (Compressed-Flag 1, gRPC PROTOCOL-HTTP2.md) is ``UNIMPLEMENTED``, as no decompressor is installed. These are
  logged at DEBUG without a traceback: a caller's bad bytes are not a server error.
* Malformed requests are ``InvalidArgument``: ``FetchJWTSVID``/``ValidateJWTSVID`` without an audience ("audience
  must be specified"), ``ValidateJWTSVID`` without a token or with a token that does not validate, an unparsable
  requested SPIFFE ID (SPIFFE Workload API §4.5).
* A caller that matches no registration entry gets ``PermissionDenied`` on every RPC but ``ValidateJWTSVID``,
  bundles included (SPIRE's default, without ``allow_unauthenticated_verifiers``; SPIFFE Workload API §5.2, §6.2);
  so does ``FetchJWTSVID`` for a SPIFFE ID the caller is not entitled to (§6.2.1). A stream whose caller loses its
  last entry ends with ``PermissionDenied``. ``ValidateJWTSVID`` only needs the caller to be attestable, as in
  SPIRE: validating reveals nothing secret.
* Streams send the complete state first and again whenever it changes (§4.3); the first SVID is the default
  (§5.3); a non-empty ``hint`` appears at most once per response (§5.2.1, §6.2.1).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from broker.devtools.workload_api.attestation import AttestationError, PeerCredentials, peer_credentials
from broker.devtools.workload_api.entries import RegistrationEntry
from broker.devtools.workload_api.state import WorkloadState
from broker.identity.errors import InvalidSpiffeIdError, JwtSvidError
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.spiffeid import SpiffeId
from broker.identity.workloadapi.pb import workload_pb2 as pb

__all__ = ["SECURITY_HEADER", "WorkloadApiHandlers"]

log = logging.getLogger(__name__)

SECURITY_HEADER = ("workload.spiffe.io", "true")


class _Message(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply", bound=_Message)


class WorkloadApiHandlers:
    """Implements :class:`~broker.devtools.workload_api.service.WorkloadApiImpl` over a :class:`WorkloadState`."""

    def __init__(self, state: WorkloadState) -> None:
        self._state = state

    async def fetch_x509_svid(self, stream: Stream[pb.X509SVIDRequest, pb.X509SVIDResponse]) -> None:
        await _receive(stream)
        caller = _attest(stream)
        await self._serve_stream(stream, lambda: self._x509_svid_response(caller))

    async def fetch_x509_bundles(self, stream: Stream[pb.X509BundlesRequest, pb.X509BundlesResponse]) -> None:
        await _receive(stream)
        caller = _attest(stream)
        await self._serve_stream(stream, lambda: self._x509_bundles_response(caller))

    async def fetch_jwt_bundles(self, stream: Stream[pb.JWTBundlesRequest, pb.JWTBundlesResponse]) -> None:
        await _receive(stream)
        caller = _attest(stream)
        await self._serve_stream(stream, lambda: self._jwt_bundles_response(caller))

    async def fetch_jwt_svid(self, stream: Stream[pb.JWTSVIDRequest, pb.JWTSVIDResponse]) -> None:
        request = await _receive(stream)
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        wanted = _requested_id(request.spiffe_id)
        caller = _attest(stream)
        entries = self._entitled(caller)
        if wanted is not None:
            entries = [entry for entry in entries if entry.spiffe_id == wanted]
            if not entries:
                log.info("caller %s asked for a JWT-SVID for %s it is not entitled to", _who(caller), wanted)
                raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        svids = []
        for entry in _unique_hints(entries):
            jwt_svid = self._state.ca.mint_jwt_svid(entry.spiffe_id, list(request.audience), ttl=entry.jwt_svid_ttl)
            svids.append(pb.JWTSVID(spiffe_id=str(entry.spiffe_id), svid=jwt_svid.token, hint=entry.hint))
        await stream.send_message(pb.JWTSVIDResponse(svids=svids))

    async def validate_jwt_svid(self, stream: Stream[pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse]) -> None:
        request = await _receive(stream)
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            raise GRPCError(Status.INVALID_ARGUMENT, "svid must be specified")
        _attest(stream)  # as SPIRE: any attested caller may validate (no entry needed), with our bundle
        bundles = {self._state.trust_domain: self._state.ca.jwt_bundle()}
        try:  # no clock-skew leeway: this server minted the token with the clock it validates with
            jwt_svid = validate_jwt_svid(request.svid, audience=request.audience, bundles=bundles, leeway=0.0)
        except JwtSvidError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, exc.description) from None
        response = pb.ValidateJWTSVIDResponse(spiffe_id=str(jwt_svid.spiffe_id))
        response.claims.update(jwt_svid.claims)
        await stream.send_message(response)

    async def _serve_stream(self, stream: Stream[Any, _Reply], build: Callable[[], _Reply]) -> None:
        """Send the full state now and after every change that alters it (SPIFFE Workload API §4.3)."""
        last: bytes | None = None
        while True:
            changed = self._state.changed()  # taken before building, so a change during the send is not lost
            message = build()
            data = message.SerializeToString(deterministic=True)
            if data != last:
                await stream.send_message(message)
                last = data
            await changed.wait()

    def _entitled(self, caller: PeerCredentials) -> list[RegistrationEntry]:
        entries = self._state.matching(caller)
        if not entries:
            log.info("caller %s matches no registration entry", _who(caller))
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        return entries

    def _x509_svid_response(self, caller: PeerCredentials) -> pb.X509SVIDResponse:
        bundle = self._state.ca.x509_bundle().to_der()
        svids = []
        for entry in _unique_hints(self._entitled(caller)):
            svid = self._state.x509_svid(entry)
            svids.append(
                pb.X509SVID(
                    spiffe_id=str(entry.spiffe_id),
                    x509_svid=svid.chain_der(),
                    x509_svid_key=svid.key_der(),
                    bundle=bundle,
                    hint=entry.hint,
                )
            )
        return pb.X509SVIDResponse(svids=svids)

    def _x509_bundles_response(self, caller: PeerCredentials) -> pb.X509BundlesResponse:
        self._entitled(caller)
        td_id = self._state.trust_domain.id_string()
        return pb.X509BundlesResponse(bundles={td_id: self._state.ca.x509_bundle().to_der()})

    def _jwt_bundles_response(self, caller: PeerCredentials) -> pb.JWTBundlesResponse:
        self._entitled(caller)
        td_id = self._state.trust_domain.id_string()
        return pb.JWTBundlesResponse(bundles={td_id: self._state.ca.jwks()})


async def _receive(stream: Stream[_Request, Any]) -> _Request:
    """Check the security header, then read the single request message."""
    key, value = SECURITY_HEADER
    values = stream.metadata.getall(key, []) if stream.metadata is not None else []
    if values != [value]:
        raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request")
    request = await _recv_message(stream)
    if request is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "request message missing")
    return request


async def _recv_message(stream: Stream[_Request, Any]) -> _Request | None:
    """``stream.recv_message()`` with grpclib's decode failures turned into gRPC statuses (see the docstring)."""
    try:
        return await stream.recv_message()
    except NotImplementedError:  # grpclib: "Compression not implemented" (the compressed flag is set)
        log.debug("refused a compressed request message")
        raise GRPCError(Status.UNIMPLEMENTED, "grpc: compressed messages are not supported") from None
    except (DecodeError, AssertionError, struct.error, ValueError) as exc:  # not protobuf, not UTF-8, truncated
        log.debug("refused a malformed request message (%s)", type(exc).__name__)
        raise GRPCError(Status.INTERNAL, "grpc: error unmarshalling request") from None


def _attest(stream: Stream[Any, Any]) -> PeerCredentials:
    try:
        caller = peer_credentials(stream.peer)
    except AttestationError as exc:
        log.warning("workload attestation failed: %s", exc.description)
        raise GRPCError(Status.PERMISSION_DENIED, "workload attestation failed") from None
    log.debug("attested caller %s", _who(caller))
    return caller


def _requested_id(value: str) -> SpiffeId | None:
    if not value:
        return None
    try:
        return SpiffeId.parse(value)
    except InvalidSpiffeIdError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {exc.description}") from None


def _unique_hints(entries: Sequence[RegistrationEntry]) -> list[RegistrationEntry]:
    """Drop entries whose non-empty hint an earlier entry already used (SPIFFE Workload API §5.2.1)."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry.hint and entry.hint in seen:
            continue
        seen.add(entry.hint)
        kept.append(entry)
    return kept


def _who(caller: PeerCredentials) -> str:
    return f"pid={caller.pid} uid={caller.uid} gid={caller.gid}"
