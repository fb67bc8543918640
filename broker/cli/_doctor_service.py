"""``spiffe-broker doctor``, checks 3 and 4: the token service, as the sidecar meets it.

3. ``token-service``: a TCP connection and a TLS handshake with this node's X.509-SVID; the server's chain
   verifies to the bundle of the trust domain its SPIFFE ID names, and that ID is the expected one
   (``--token-service-id``, default ``spiffe://<own trust domain>/spiffe-broker``); then the RFC 8414 metadata at
   ``/.well-known/oauth-authorization-server`` over mTLS: HTTP 200, JSON, ``issuer`` identical to the one asked
   for (§3.3), and the members the broker's clients use (``token_endpoint``, ``jwks_uri``) and §2 requires
   (``response_types_supported``). The response's ``Date`` header is a reading of the service host's clock.
4. ``policy`` (with ``--audience``): a real RFC 8693 exchange by the sidecar's own client
   (:class:`~broker.sidecar.exchanger.TokenServiceClient`, one attempt): a JWT-SVID for the issuer as
   ``subject_token``, over mTLS; the token must come back bound to this node's certificate (RFC 8705 §3.1).
   Each RFC 6749 §5.2 refusal is named for what it means here (policy, quarantine, client, grant).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import ssl
import time
from urllib.parse import urlsplit

import aiohttp

from broker.cli._doctor_node import ClockSample, Node, Timed
from broker.cli._doctor_report import CheckFailed, Outcome
from broker.identity.errors import IdentityError, X509SvidError
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.connector import NETWORK_ERRORS, SpiffeTLSConnector
from broker.identity.spiffetls.context import client_ssl_context, peer_spiffe_id
from broker.oauth.metadata import AuthorizationServerMetadata, MetadataError, metadata_url
from broker.sidecar.errors import TokenServiceRefusedError, TokenServiceUnavailableError
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.service import DEFAULT_BROKER_ID_PATH

__all__ = ["POLICY", "TOKEN_SERVICE", "check_policy", "check_token_service"]

TOKEN_SERVICE = "token-service"  # noqa: S105 - a check's name
POLICY = "policy"
_DOWN_FIX = (
    "start the token service (spiffe-broker server), or fix --token-service (the issuer URL, server.issuer); "
    "check firewalls and network policies between this node and it"
)
_METADATA_FIX = (
    "read the token service's log: it must accept this trust domain's X.509-SVIDs as clients (its bundles) and "
    "serve its RFC 8414 metadata at that URL"
)
_LOG_FIX = "read the token service's log and its refusals (`spiffe-broker audit tail --event token.refused`)"


def _expected_id(node: Node) -> SpiffeId:
    if node.inputs.server_id:
        return SpiffeId.parse(node.inputs.server_id)
    return SpiffeId(node.need_svid().spiffe_id.trust_domain, DEFAULT_BROKER_ID_PATH)


def _connect_failure(where: str, exc: OSError, timeout: float) -> CheckFailed:
    if isinstance(exc, TimeoutError):
        return CheckFailed(f"no answer from {where} within {timeout:g} s", _DOWN_FIX)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CheckFailed(
            f"the certificate of {where} does not verify against this node's bundles ({exc.verify_message})",
            "is it the token service? Its X.509-SVID must come from this trust domain or a federated one",
        )
    if isinstance(exc, ssl.SSLError):
        return CheckFailed(
            f"the TLS handshake with {where} failed ({exc.reason or exc})",
            "the token service must serve TLS there and accept this trust domain's X.509-SVIDs",
        )
    said = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio words it "Connect call failed (...)"
    return CheckFailed(f"cannot connect to the token service at {where}: {said}", _DOWN_FIX)


async def _handshake(node: Node) -> SpiffeId:
    """TLS with the X.509-SVID, trusting every bundle, so a server of another SPIFFE ID can be named."""
    parts = urlsplit(node.inputs.issuer)
    host, port = parts.hostname or "", parts.port or 443
    where, timeout = f"{host}:{port}", node.inputs.timeout
    context = client_ssl_context(node.need_source(), server_id=None)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), timeout)
    except OSError as exc:
        raise _connect_failure(where, exc, timeout) from None
    finally:
        context.detach()
    try:
        return peer_spiffe_id(writer.get_extra_info("ssl_object"), context.bundles(), role="server")[0]
    except X509SvidError as exc:
        raise CheckFailed(
            f"the server at {where} is not a valid X.509-SVID server: {exc.description}",
            "check --token-service: it must name the token service",
        ) from None
    finally:
        writer.transport.abort()


async def _get_metadata(node: Node, server_id: SpiffeId) -> tuple[int, object]:
    """GET the metadata over mTLS; records the ``Date`` header as a clock sample."""
    url = metadata_url(node.inputs.issuer)
    context = client_ssl_context(node.need_source(), server_id=server_id)
    timeout = aiohttp.ClientTimeout(total=node.inputs.timeout)
    async with aiohttp.ClientSession(connector=SpiffeTLSConnector(context), timeout=timeout) as session:
        sent = time.time()
        try:
            async with session.get(url, allow_redirects=False) as response:
                status, date, raw = response.status, response.headers.get("Date"), await response.read()
        except NETWORK_ERRORS as exc:
            raise CheckFailed(f"GET {url} failed: {type(exc).__name__}: {exc}", _METADATA_FIX) from None
        finally:
            context.detach()
    when = Timed.since(sent)
    with contextlib.suppress(TypeError, ValueError):
        stamp = email.utils.parsedate_to_datetime(date or "").timestamp()
        node.clocks.append(ClockSample("the token service's host", "its HTTP Date header", stamp, when))
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def _metadata(node: Node, status: int, body: object) -> AuthorizationServerMetadata:
    url, issuer = metadata_url(node.inputs.issuer), node.inputs.issuer
    fix = f"pass the token service's own issuer URL (its server.issuer) as --token-service; it was {issuer}"
    if status != 200 or not isinstance(body, dict):
        raise CheckFailed(f"{url} answered HTTP {status}{'' if body is not None else ', not JSON'}", fix)
    try:
        metadata = AuthorizationServerMetadata.from_document(body, issuer=issuer)
    except MetadataError as exc:
        said = body.get("issuer")
        raise CheckFailed(f"{url}: {exc.description} (it says {said!r})", fix, issuer=str(said)) from None
    missing = [name for name in ("token_endpoint", "jwks_uri", "response_types_supported") if name not in body]
    if missing:
        raise CheckFailed(
            f"the metadata at {url} has no {', '.join(missing)} (RFC 8414 §2)",
            "is that a spiffe-broker token service? Upgrade it if it is an old one",
        )
    return metadata


async def check_token_service(node: Node) -> Outcome:
    expected = _expected_id(node)
    peer = await _handshake(node)
    where = urlsplit(node.inputs.issuer).netloc
    if peer != expected:
        raise CheckFailed(
            f"the server at {where} is {peer}, not the expected {expected}",
            f"if it is the token service, pass --token-service-id {peer}; else fix --token-service",
            server_id=str(peer),
        )
    node.metadata = _metadata(node, *await _get_metadata(node, expected))
    node.server_id = expected
    return Outcome.passed(
        TOKEN_SERVICE,
        f"{where} is {peer} over mTLS; its metadata names issuer {node.inputs.issuer}",
        server_id=str(peer),
        issuer=node.inputs.issuer,
        token_endpoint=node.metadata.token_endpoint,
        jwks_uri=node.metadata.jwks_uri,
    )


# -- check 4 ---------------------------------------------------------------------------------------------------

_POLICY_FIX = (
    "add a rule for {id} with audience {aud} to the token service's policy file (docs/operations.md, 'Policy'; "
    "or to the workloads file, then `spiffe-broker entries export FILE --policy POLICY`): it is reloaded within "
    "a second"
)


def _said(exc: TokenServiceRefusedError) -> str:
    return f"{exc.error}: {exc.description}" if exc.description else exc.error


def _skews(node: Node) -> str:
    far = [s for s in node.clocks if abs(s.offset) > node.inputs.max_skew]
    return "".join(f"; {s.clock}'s clock is {s.offset:+.1f} s from this node's" for s in far)


def _refusal(node: Node, exc: TokenServiceRefusedError) -> CheckFailed:
    spiffe_id, audience, scope = node.need_svid().spiffe_id, node.inputs.audience, node.inputs.scope
    scoped = f" with scope {scope!r}" if scope else ""
    if exc.error == "access_denied" and "quarantine" in exc.description:
        return CheckFailed(
            f"{spiffe_id} is quarantined ({_said(exc)})",
            "see `spiffe-broker quarantine list`; release only as docs/operations.md says",
        )
    if exc.error in ("invalid_target", "invalid_scope", "access_denied", "unauthorized_client"):
        return CheckFailed(
            f"audience {audience}{scoped} is not in the broker policy for {spiffe_id} ({_said(exc)})",
            _POLICY_FIX.format(id=spiffe_id, aud=f"{audience}{scoped}"),
            error=exc.error,
        )
    if exc.error == "invalid_client":
        return CheckFailed(
            f"the token service refused this node's X.509-SVID as a client ({_said(exc)})",
            "the token service must trust this trust domain's bundle (same SPIRE, or federated)",
        )
    if exc.error == "invalid_grant":
        return CheckFailed(
            f"the token service refused this node's JWT-SVID ({_said(exc)}){_skews(node)}",
            "--token-service must be the exact issuer (the JWT-SVID's audience), and every clock within the "
            "leeway: check time sync (chrony/NTP) here, on the SPIRE server and on the token service",
        )
    return CheckFailed(f"the token service refused the exchange ({_said(exc)})", _LOG_FIX, error=exc.error)


def _client(node: Node) -> TokenServiceClient:
    server_id, _ = node.need_server()
    client = TokenServiceClient(
        source=node.need_source(),
        issuer=node.inputs.issuer,
        server_id=server_id,
        retry=RetryPolicy(attempts=1),
        timeout=node.inputs.timeout,
    )
    node.stack.push_async_callback(client.aclose)
    return client


async def check_policy(node: Node) -> Outcome:
    audience = node.inputs.audience
    if audience is None:
        return Outcome.skipped(POLICY, "no --audience given: pass --audience A to try a token exchange")
    sent = time.time()
    try:
        result = await _client(node).exchange(audience, node.inputs.scope)
    except TokenServiceRefusedError as exc:
        raise _refusal(node, exc) from None
    except (TokenServiceUnavailableError, IdentityError) as exc:
        raise CheckFailed(f"no token from the token service: {exc.description}", _LOG_FIX) from None
    when = Timed.since(sent)
    if result.bound_x5t != node.need_svid().x5t_s256():
        raise CheckFailed(
            "the token is not bound to this node's certificate (cnf.x5t#S256, RFC 8705 §3.1)",
            "resource servers will refuse it: check the token service's [assertions] settings",
        )
    node.token = (result, when)
    if result.issued_at is not None:
        node.clocks.append(ClockSample("the token service", "the iat of the token it issued", result.issued_at, when))
    return Outcome.passed(
        POLICY,
        f"{node.need_svid().spiffe_id} gets tokens for {audience}: kid {result.kid}, valid {result.expires_in} s",
        audience=audience,
        kid=result.kid,
        expires_in=result.expires_in,
        issued_at=result.issued_at,
    )
