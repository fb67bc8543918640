"""``spiffe-broker doctor``, checks 1 and 2: this node's identity, from the Workload API.

1. ``workload-api``: the address, as the sidecar resolves it (``--workload-api``, then ``workload_api.socket``
   in the config, then ``SPIFFE_ENDPOINT_SOCKET``); for a Unix address, a socket file at that path; one
   ``FetchX509SVID`` (SPIFFE Workload API §5) that answers within the timeout with an X.509-SVID. The agent
   attests the caller by its uid (SPIRE's ``unix`` workload attestor): PermissionDenied means no registration
   entry matches this process, and the failure names the uid and how to register it.
2. ``trust-bundle``: the X.509-SVID is current and its chain verifies to its own trust domain's X.509 bundle
   (X509-SVID §5.1, :func:`~broker.identity.x509svid.verify_x509_svid`), a bundle that is present and holds an
   unexpired authority; a fresh JWT-SVID (a one-off audience, so the agent cannot hand back a cached one) names
   the same SPIFFE ID and verifies with the trust domain's JWT bundle (its times are check 6's business).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from broker.cli._doctor_node import Node, Timed
from broker.cli._doctor_report import CheckFailed, Outcome
from broker.config import unix_socket_path, workload_api_address
from broker.errors import ConfigError
from broker.identity.bundle import X509Bundle
from broker.identity.errors import IdentityError, JwtSvidError, X509SvidError
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.spiffeid import TrustDomain
from broker.identity.svid import JwtSvid, X509Svid
from broker.identity.workloadapi.messages import x509_context_from_response
from broker.identity.workloadapi.pb import WORKLOAD_METADATA, WorkloadApiStub, grpc_target, workload_pb2
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.identity.x509svid import verify_x509_svid
from broker.jose.jws import read_unverified

__all__ = ["TRUST_BUNDLE", "WORKLOAD_API", "check_trust_bundle", "check_workload_api"]

WORKLOAD_API = "workload-api"
TRUST_BUNDLE = "trust-bundle"
CLOCK_AUDIENCE = "spiffe-broker-doctor/"  # + a random suffix: a JWT-SVID the agent must mint now
_NO_TIME_CHECK = 100 * 365 * 86400.0  # validate_jwt_svid's leeway while the times are left to the time-sync check
_AGENT_FIX = "start (or restart) the SPIRE agent and check its log; `spire-agent healthcheck -socketPath PATH`"


def _address(configured: str | None) -> str:
    try:
        return workload_api_address(configured)
    except ConfigError as exc:
        raise CheckFailed(
            exc.description,
            "pass --workload-api unix:///path/to/agent.sock, or set workload_api.socket in the config file, or "
            "SPIFFE_ENDPOINT_SOCKET, as for the sidecar",
        ) from None


def _check_socket_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckFailed(
            f"no socket at {path}",
            "start the SPIRE agent, or mount its socket directory here (Kubernetes: the SPIFFE CSI driver or a "
            "hostPath volume), and point --workload-api or SPIFFE_ENDPOINT_SOCKET at it",
            socket=str(path),
        ) from None
    except OSError as exc:
        raise CheckFailed(
            f"cannot reach the socket at {path}: {exc.strerror}",
            f"let uid {os.geteuid()} search the socket's directories (their x bit) and connect to the socket",
            socket=str(path),
        ) from None
    if not stat.S_ISSOCK(mode):
        raise CheckFailed(f"{path} is not a socket", "point --workload-api at the SPIRE agent's socket")


def _first_x509_response(address: str, timeout: float) -> Any:
    """One ``FetchX509SVID`` in this thread: its first response, or None if the stream ends without one."""
    channel = grpc.insecure_channel(grpc_target(address))
    try:
        request = workload_pb2.X509SVIDRequest()
        call = WorkloadApiStub(channel).FetchX509SVID(request, metadata=WORKLOAD_METADATA, timeout=timeout)
        try:
            return next(iter(call), None)
        finally:
            call.cancel()
    finally:
        channel.close()


def _rpc_failure(address: str, exc: grpc.RpcError, timeout: float) -> CheckFailed:
    code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    said = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    uid, gid = os.geteuid(), os.getegid()
    if code == "PERMISSION_DENIED":
        return CheckFailed(
            f"the Workload API at {address} attests this process (uid {uid}, gid {gid}) but no registration entry "
            f"matches it (PERMISSION_DENIED: {said})",
            f"register it: add a workload with selector unix:uid:{uid} to your workloads file and run "
            "`spiffe-broker entries apply FILE`, or `spire-server entry create -parentID AGENT_ID -spiffeID ID "
            f"-selector unix:uid:{uid}` (Kubernetes: the pod's k8s:ns and k8s:sa selectors); a new entry reaches "
            "the agent within about 10 s",
            uid=uid,
            gid=gid,
        )
    if code == "UNAVAILABLE":
        return CheckFailed(f"nothing answers on the Workload API at {address} ({code}: {said})", _AGENT_FIX)
    if code == "DEADLINE_EXCEEDED":
        return CheckFailed(f"the Workload API at {address} sent no X.509-SVID within {timeout:g} s", _AGENT_FIX)
    return CheckFailed(f"the Workload API at {address} answered {code}: {said}", _AGENT_FIX)


async def _x509_svid_of(address: str, timeout: float) -> X509Svid:
    try:
        response = await asyncio.to_thread(_first_x509_response, address, timeout)
    except grpc.RpcError as exc:
        raise _rpc_failure(address, exc, timeout) from None
    if response is None:
        raise CheckFailed(f"the Workload API at {address} ended the stream without an X.509-SVID", _AGENT_FIX)
    try:
        svid: X509Svid = x509_context_from_response(response)[0]
    except IdentityError as exc:
        raise CheckFailed(
            f"the Workload API at {address} sent an unusable X.509-SVID: {exc.description}",
            "check the SPIRE server's CA and the entry's SPIFFE ID",
        ) from None
    return svid


async def check_workload_api(node: Node) -> Outcome:
    address = node.address = _address(node.inputs.workload_api)
    if address.startswith("unix:"):
        _check_socket_file(unix_socket_path(address))
    svid = await _x509_svid_of(address, node.inputs.timeout)
    source = WorkloadApiSvidSource(address=address)
    node.stack.push_async_callback(source.aclose)
    try:
        await source.wait_ready(node.inputs.timeout)
    except IdentityError as exc:
        raise CheckFailed(exc.description, _AGENT_FIX) from None
    node.source = source
    uid = os.geteuid()
    return Outcome.passed(
        WORKLOAD_API,
        f"{address} answers; uid {uid} is {svid.spiffe_id}",
        address=address,
        uid=uid,
        spiffe_id=str(svid.spiffe_id),
    )


# -- check 2 ---------------------------------------------------------------------------------------------------

_BUNDLE_FIX = (
    "the agent holds another trust domain's or an outdated bundle: check its trust_bundle_path/trust_bundle_url "
    "(or re-bootstrap it), and the SPIRE server's CA and UpstreamAuthority"
)


def _check_authorities(td: TrustDomain, bundle: X509Bundle | None, now: dt.datetime) -> dt.datetime:
    """The bundle's latest ``notAfter``; fails when there is no bundle, or every authority in it expired."""
    if bundle is None or not bundle.authorities:
        raise CheckFailed(f"the Workload API sent no X.509 bundle for {td}", _BUNDLE_FIX, trust_domain=td.name)
    latest = max(cert.not_valid_after_utc for cert in bundle.authorities)
    if latest < now:
        raise CheckFailed(
            f"every authority in the X.509 bundle of {td} expired (the last at {latest.isoformat()})",
            "rotate the SPIRE server's CA (its ca_ttl, or the UpstreamAuthority's), then let the agents fetch it",
            trust_domain=td.name,
        )
    return latest


def _current_svid(node: Node) -> X509Svid:
    try:
        return node.need_source().x509_svid()
    except IdentityError as exc:  # it expired and no newer one came
        raise CheckFailed(exc.description, _AGENT_FIX) from None


def _check_chain(node: Node, svid: X509Svid) -> None:
    try:
        verify_x509_svid(svid.chain, node.need_source().x509_bundles(), role="client")
    except X509SvidError as exc:
        raise CheckFailed(
            f"this node's X.509-SVID does not verify to the bundle of {svid.spiffe_id.trust_domain}: {exc.description}",
            _BUNDLE_FIX,
        ) from None


async def _fresh_jwt_svid(node: Node, svid: X509Svid) -> JwtSvid:
    """A JWT-SVID minted now, checked against the JWT bundle (signature, ``kid``, ``sub``), not the clock."""
    audience = CLOCK_AUDIENCE + secrets.token_hex(8)
    sent = time.time()
    try:
        jwt = await node.need_source().fetch_jwt_svid(audience)
        validate_jwt_svid(jwt.token, audience=audience, bundles=node.need_source().jwt_bundles(), leeway=_NO_TIME_CHECK)
    except JwtSvidError as exc:
        raise CheckFailed(
            f"this node's JWT-SVID does not verify with the JWT bundle of {svid.spiffe_id.trust_domain}: "
            f"{exc.description}",
            _BUNDLE_FIX,
        ) from None
    except IdentityError as exc:
        raise CheckFailed(exc.description, _AGENT_FIX) from None
    if jwt.spiffe_id != svid.spiffe_id:
        raise CheckFailed(
            f"the JWT-SVID names {jwt.spiffe_id}, the X.509-SVID {svid.spiffe_id}: the token service refuses that",
            "give this workload one registration entry (several entries match its selectors)",
        )
    node.clock_svid = (jwt, Timed.since(sent))
    return jwt


async def check_trust_bundle(node: Node) -> Outcome:
    svid = _current_svid(node)
    td = svid.spiffe_id.trust_domain
    latest = _check_authorities(td, node.need_source().x509_bundles().get(td), dt.datetime.now(dt.UTC))
    _check_chain(node, svid)
    jwt = await _fresh_jwt_svid(node, svid)
    node.svid = svid
    return Outcome.passed(
        TRUST_BUNDLE,
        f"the X.509-SVID (until {svid.not_after.isoformat()}) and a JWT-SVID (kid {jwt_kid(jwt)}) verify to the "
        f"bundles of {td}",
        trust_domain=td.name,
        svid_not_after=svid.not_after.isoformat(),
        bundle_not_after=latest.isoformat(),
        jwt_svid_kid=jwt_kid(jwt),
    )


def jwt_kid(jwt: JwtSvid) -> str:
    """The JWT-SVID's ``kid`` (a key ID, safe to print), read from its header."""
    kid = read_unverified(jwt.token, canonical=False).header.get("kid")
    return kid if isinstance(kid, str) else "?"
