"""A small resource server for the quick start and the tests: ``GET /hello`` behind :mod:`broker.verify`.

It serves TLS with its own X.509-SVID and *requests* but does not require a client certificate, so a call
without one reaches the application and is refused as RFC 8705 §3 says (401 ``invalid_token``) instead of
failing in the handshake. A certificate that is sent must chain to a trusted bundle. The broker's JWKS is fetched
over mTLS with the same SVID, from the token service whose SPIFFE ID is ``token_service_id``.

DPoP-bound tokens (RFC 9449) are accepted too, by default: ``Authorization: DPoP <token>`` with a ``DPoP`` proof
of the key the token is bound to (the middleware of :mod:`broker.verify` checks it, and refuses the same token
without a proof or sent as ``Bearer``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from aiohttp import web

from broker.identity.source import X509ContextSource
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, server_ssl_context
from broker.verify.dpop import DpopPolicy
from broker.verify.feed import RevocationFeedFollower
from broker.verify.jwks import HttpsJsonFetcher, JwksFetchError, RemoteJwksProvider
from broker.verify.middleware import VERIFIED_TOKEN, bearer_auth_middleware
from broker.verify.verifier import AccessTokenVerifier
from broker.web import HardenedAppRunner, ListenerLimits, start_tcp_site

__all__ = ["DEMO_DPOP_POLICY", "RunningDemoApi", "build_demo_app", "start_demo_api"]

log = logging.getLogger(__name__)

DEMO_DPOP_POLICY = DpopPolicy()  # each verifier keeps its own replay cache (the policy names none)


async def hello(request: web.Request) -> web.Response:
    """Greets the verified caller by SPIFFE ID and echoes the granted scope."""
    token = request[VERIFIED_TOKEN]
    return web.json_response({"hello": str(token.spiffe_id), "scope": token.scope})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_demo_app(verifier: AccessTokenVerifier) -> web.Application:
    app = web.Application(middlewares=[bearer_auth_middleware(verifier, exempt=("/healthz",))])
    app.router.add_get("/hello", hello)
    app.router.add_get("/healthz", healthz)
    return app


@dataclass
class RunningDemoApi:
    """A started demo API: its port, verifier, and :meth:`aclose`."""

    runner: HardenedAppRunner
    port: int
    verifier: AccessTokenVerifier
    jwks: RemoteJwksProvider
    fetcher: HttpsJsonFetcher = field(repr=False)
    ssl_context: SourceSSLContext = field(repr=False)
    revocations: RevocationFeedFollower | None = None

    async def aclose(self) -> None:
        await self.runner.cleanup()
        if self.revocations is not None:
            await self.revocations.aclose()
        await self.jwks.aclose()
        await self.fetcher.aclose()
        self.ssl_context.detach()


async def start_demo_api(
    *,
    source: X509ContextSource,
    issuer: str,
    audience: str,
    token_service_id: ServerIdMatcher,
    host: str = "127.0.0.1",
    port: int = 0,
    leeway: float = 30.0,
    limits: ListenerLimits | None = None,
    follow_revocations: bool = True,
    dpop: DpopPolicy | None = DEMO_DPOP_POLICY,
) -> RunningDemoApi:
    """Serve the demo API over TLS (client certificate optional) on the hardened runner (:mod:`broker.web`); port 0
    picks a free port. With ``follow_revocations`` it follows the token service's revocation feed when the
    metadata advertises one (fail-closed when it goes stale), as a production resource server should. It accepts
    DPoP-bound tokens under ``dpop`` (None: certificate-bound tokens only)."""
    fetcher = HttpsJsonFetcher(source=source, server_id=token_service_id)
    jwks = RemoteJwksProvider(issuer=issuer, fetch_json=fetcher)
    feed = None
    if follow_revocations:
        feed = RevocationFeedFollower.over_mtls(issuer=issuer, source=source, server_id=token_service_id, jwks=jwks)
    verifier = AccessTokenVerifier(
        issuer=jwks.issuer, audience=audience, jwks=jwks, leeway=leeway, revocations=feed, dpop=dpop
    )
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(build_demo_app(verifier), limits=limits)
    await runner.setup()
    running = RunningDemoApi(runner, 0, verifier, jwks, fetcher, ssl_context, feed)
    try:
        running.port = await start_tcp_site(runner, host, port, ssl_context=ssl_context)
    except BaseException:
        await running.aclose()
        raise
    with contextlib.suppress(JwksFetchError):  # best effort: the first request fetches the keys otherwise
        await jwks.refresh()
    if feed is not None:
        feed.start()
        await feed.wait_synced(5.0)  # best effort too: until it is synchronised, tokens get 503 (fail closed)
    log.info("demo API on https://%s:%d/hello for audience %s", host, running.port, audience)
    return running
