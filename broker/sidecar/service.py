"""Starting and stopping the sidecar in process (``spiffe-broker sidecar``, ``spiffe-broker dev`` and tests).

The token service is authenticated by SPIFFE ID before the sidecar sends it anything. Unless told otherwise the
expected ID is ``spiffe://<the workload's own trust domain>/spiffe-broker`` (:func:`token_service_matcher`):
an exact ID, not "anyone in the trust domain", because any workload of the trust domain could otherwise pose as
the token service and collect JWT-SVIDs minted for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from broker.config import MetricsSettings
from broker.identity.source import X509Source
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import ServerIdMatcher
from broker.sidecar.app import TokenServiceLink, build_sidecar_app
from broker.sidecar.cache import Clock, TokenCache
from broker.sidecar.dpop import SvidProofSigner
from broker.sidecar.exchanger import ExchangeSource, TokenServiceClient
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.revocations import RevocationWatcher
from broker.sidecar.sockets import bind_loopback, bind_unix_socket, parse_socket_mode
from broker.verify.feed import RevocationFeedFollower
from broker.web import HardenedAppRunner, ListenerLimits, start_sock_site
from broker.web.metrics import MetricsListener, start_metrics_listener

if TYPE_CHECKING:  # loaded where used: metrics only when served, the egress proxy only when it listens
    from prometheus_client import CollectorRegistry

    from broker.sidecar.egress.client import ApiKeyLink
    from broker.sidecar.egress.proxy import EgressProxy
    from broker.sidecar.egress.service import EgressOptions, RunningEgress

__all__ = [
    "DEFAULT_BROKER_ID_PATH",
    "TOKEN_BINDINGS",
    "RunningSidecar",
    "TokenBinding",
    "start_sidecar",
    "token_service_matcher",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER_ID_PATH = "/spiffe-broker"
TokenBinding = Literal["mtls", "dpop"]  # RFC 8705 §3 (the certificate), RFC 9449 §6 (the SVID key, DPoP proofs)
TOKEN_BINDINGS: tuple[TokenBinding, ...] = get_args(TokenBinding)


def token_service_matcher(configured: str | None, source: X509Source) -> ServerIdMatcher:
    """The token service's expected SPIFFE ID: ``configured``, else ``spiffe://<own trust domain>/spiffe-broker``.

    The default is resolved at each check (the source may not hold an SVID yet when the sidecar starts).
    """
    if configured:
        return SpiffeId.parse(configured)

    def is_token_service(peer: SpiffeId) -> bool:
        own = source.x509_svid().spiffe_id.trust_domain
        return peer == SpiffeId(own, DEFAULT_BROKER_ID_PATH)

    return is_token_service


@dataclass
class RunningSidecar:
    """A started sidecar: where it listens, its cache and token service client, and :meth:`aclose`."""

    runner: HardenedAppRunner
    cache: TokenCache = field(repr=False)
    token_service: TokenServiceLink = field(repr=False)
    socket_path: Path | None = None
    http_port: int | None = None
    egress: RunningEgress | None = None
    metrics: MetricsListener | None = None

    async def aclose(self) -> None:
        """Stop serving (the egress proxy first, then the cache and the token service client); remove the sockets."""
        if self.metrics is not None:
            with contextlib.suppress(Exception):  # a metrics listener that fails to close must not keep the rest up
                await self.metrics.aclose()
        if self.egress is not None:
            await self.egress.aclose()
        await self.runner.cleanup()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    stop = aclose


def _proof_signer(source: ExchangeSource, token_binding: TokenBinding, clock: Clock) -> SvidProofSigner | None:
    """The SVID-key signer of DPoP proofs with ``token_binding = "dpop"`` (RFC 9449), else None."""
    if token_binding not in TOKEN_BINDINGS:
        raise ValueError(f"token_binding must be one of {', '.join(TOKEN_BINDINGS)}")
    dpop = token_binding == "dpop"  # noqa: S105 - a binding mode, not a secret
    return SvidProofSigner(source, clock=clock) if dpop else None


@dataclass(frozen=True)
class _Egress:
    proxy: EgressProxy
    link: ApiKeyLink
    options: EgressOptions


def _egress(
    egress: EgressOptions | None,
    apikeys: ApiKeyLink | None,
    *,
    source: ExchangeSource,
    issuer: str,
    server_id: ServerIdMatcher,
    timeout: float,
    clock: Clock,
) -> _Egress | None:
    """The egress proxy's parts when ``egress`` names a listener: its API-key client (``apikeys`` in tests)."""
    if egress is None or not egress.enabled:
        return None
    from broker.sidecar.egress.client import ApiKeyClient
    from broker.sidecar.egress.service import build_proxy

    link = apikeys or ApiKeyClient(source=source, issuer=issuer, server_id=server_id, timeout=timeout)
    return _Egress(build_proxy(link, egress, clock=clock), link, egress)


def _metrics_registry(
    metrics: MetricsSettings | None,
    cache: TokenCache,
    source: ExchangeSource,
    clock: Clock,
    follower: RevocationFeedFollower | None,
    egress: _Egress | None,
) -> CollectorRegistry | None:
    """The sidecar's metrics (:mod:`broker.sidecar.metrics`) when ``[metrics] enabled`` and served (a metrics
    listener, or ``on_app_socket``), else None: a registry nobody can scrape would cost prometheus_client's
    resident memory (about 5 MiB) for nothing, so it is not imported then."""
    if metrics is None or not metrics.enabled or not (metrics.listens or metrics.on_app_socket):
        return None
    from broker.metrics import CappedLabel
    from broker.sidecar.metrics import SidecarCollector, sidecar_registry

    audiences = CappedLabel(metrics.max_audience_labels)
    stats = None if egress is None else egress.proxy.stats
    return sidecar_registry(SidecarCollector(cache, source, clock, audiences, follower=follower, egress=stats))


def _watcher(
    follower: RevocationFeedFollower | None,
    cache: TokenCache,
    source: ExchangeSource,
    clock: Clock,
    egress: _Egress | None,
) -> RevocationWatcher | None:
    """The feed's effects on the cache, and on the egress proxy's held secrets; None without a feed."""
    if follower is None:
        return None
    listeners = [egress.proxy.grants] if egress is not None else []
    return RevocationWatcher(follower, cache, source, clock=clock, listeners=listeners)


async def _listen(
    running: RunningSidecar,
    socket_path: Path | None,
    socket_mode: int,
    http_port: int | None,
    egress: _Egress | None = None,
) -> None:
    """Start the Unix socket and/or loopback listeners, and the egress proxy's; on failure stop all and raise."""
    try:
        if egress is not None:
            from broker.sidecar.egress.service import start_egress

            options = replace(egress.options, socket_mode=socket_mode)
            running.egress = await start_egress(egress.link, options, proxy=egress.proxy)
        if socket_path is not None:
            running.socket_path = socket_path
            await start_sock_site(running.runner, bind_unix_socket(socket_path, socket_mode))
        if http_port is not None:
            sock = bind_loopback(http_port)
            await start_sock_site(running.runner, sock)
            running.http_port = int(sock.getsockname()[1])
    except BaseException:
        await running.aclose()
        raise


async def start_sidecar(
    *,
    source: ExchangeSource,
    token_service_url: str,
    token_service_id: ServerIdMatcher,
    socket_path: Path | None,
    socket_mode: int = 0o600,
    http_port: int | None = None,
    probe_interval: float = 30.0,
    retry: RetryPolicy | None = None,
    timeout: float = 5.0,
    token_service: TokenServiceLink | None = None,
    clock: Clock = time.time,
    limits: ListenerLimits | None = None,
    follow_revocations: bool = True,
    revocation_follower: RevocationFeedFollower | None = None,
    token_binding: TokenBinding = "mtls",  # noqa: S107 - a binding mode, not a secret
    egress: EgressOptions | None = None,
    apikeys: ApiKeyLink | None = None,
    metrics: MetricsSettings | None = None,
) -> RunningSidecar:
    """Serve ``/v1/token`` on ``socket_path`` (mode ``socket_mode``) and/or ``127.0.0.1:http_port`` (0: any free).

    ``token_service_url`` is the token service's issuer URL (its RFC 8414 metadata names the token endpoint).
    ``token_service`` replaces the real :class:`TokenServiceClient` (tests); the sidecar closes it on exit.
    With ``follow_revocations`` the sidecar follows the token service's revocation feed
    (:mod:`broker.sidecar.revocations`) over mTLS as the workload, if its metadata advertises one; a
    ``revocation_follower`` replaces that follower (it is then followed whatever ``token_service`` is).
    ``token_binding``: ``"mtls"`` binds tokens to the X.509-SVID's certificate (RFC 8705 §3); ``"dpop"`` binds them
    to its key with DPoP proofs (RFC 9449, :mod:`broker.sidecar.dpop`) and serves ``POST /v1/dpop-proof``.
    ``egress`` with a socket or port also serves the egress proxy that injects API-key exceptions
    (:mod:`broker.sidecar.egress`), its socket with ``socket_mode``; ``apikeys`` replaces its client of the token
    service (tests). Its held secrets follow the revocation feed with the tokens.
    Both listeners use the hardened runner (:mod:`broker.web`: request deadlines, half-close answered, no request
    byte echoed or logged); the sidecar keeps no access log.
    """
    if socket_path is None and http_port is None and (egress is None or not egress.enabled):
        raise ValueError("the sidecar needs a Unix socket path, an HTTP port or an egress listener")
    socket_mode = parse_socket_mode(socket_mode)  # e.g. a decimal 600 from a config file is refused, not applied
    signer = _proof_signer(source, token_binding, clock)
    link = token_service or TokenServiceClient(
        source=source, issuer=token_service_url, server_id=token_service_id, retry=retry, timeout=timeout, dpop=signer
    )
    cache = TokenCache(exchanger=link, source=source, clock=clock)
    if revocation_follower is None and follow_revocations and token_service is None:
        revocation_follower = RevocationFeedFollower.over_mtls(
            issuer=token_service_url, source=source, server_id=token_service_id, on_stale="accept"
        )
    proxy = _egress(egress, apikeys, source=source, issuer=token_service_url, server_id=token_service_id,
                    timeout=timeout, clock=clock)  # fmt: skip
    watcher = _watcher(revocation_follower, cache, source, clock, proxy)
    registry = _metrics_registry(metrics, cache, source, clock, revocation_follower, proxy)
    app = build_sidecar_app(
        source=source,
        token_service=link,
        cache=cache,
        probe_interval=probe_interval,
        revocations=watcher,
        proofs=signer,
        reveal=None if proxy is None else proxy.proxy,
        metrics=registry if metrics is not None and metrics.on_app_socket else None,
    )
    runner = HardenedAppRunner(app, limits=limits, access_log=None)
    await runner.setup()
    running = RunningSidecar(runner, cache, link)
    await _listen(running, socket_path, socket_mode, http_port, proxy)
    if registry is not None and metrics is not None and metrics.listens:
        try:
            running.metrics = await start_metrics_listener(registry, host=metrics.host, port=metrics.port,
                                                           socket_path=metrics.socket)  # fmt: skip
        except BaseException:
            await running.aclose()
            raise
    where = [str(socket_path)] if socket_path is not None else []
    where += [f"127.0.0.1:{running.http_port}"] if running.http_port is not None else []
    log.info(
        "sidecar serving on %s (token service %s, %s-bound tokens)", ", ".join(where), token_service_url, token_binding
    )
    return running
