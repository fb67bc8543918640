"""A DPoP-honouring fake token endpoint (RFC 9449 §5, §8) over real mTLS, and POSTs to the sidecar's socket.

:class:`DpopTokenEndpoint` serves RFC 8414 metadata (with ``dpop_signing_alg_values_supported``) and ``POST /token``:
it checks the ``DPoP`` proof with :func:`broker.oauth.dpop.check_proof` (htm ``POST``, htu its token endpoint, the
server nonce when ``nonces`` is set: ``use_dpop_nonce`` with ``DPoP-Nonce``, §8) and the replay cache, then issues a
real ES256 ``at+jwt`` bound to the proof key (``cnf.jkt``, ``token_type: DPoP``), which
:class:`broker.verify.AccessTokenVerifier` can check with :meth:`verifier`. Without a proof, or with
``ignore_dpop``, it answers as a server without DPoP: a Bearer token bound to the client certificate.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.errors import DpopProofError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.oauth.constants import TOKEN_TYPE_ACCESS_TOKEN
from broker.oauth.dpop import DpopProof, check_proof, check_proof_unused
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import MemoryReplayCache
from broker.verify import AccessTokenVerifier, DpopPolicy, StaticJwksProvider, parse_jwks
from broker.verify.verifier import certificate_thumbprint
from tests.unit.sidecar.sidecar_helpers import API, WEB_ID, Reply, free_port
from tests.unit.verify.verify_helpers import Signer

ALGORITHMS = ["ES256", "ES384", "ES512", "PS256", "RS256"]


@dataclass
class DpopTokenEndpoint:
    """See the module docstring; records what it saw (proofs, client certificates, refusals)."""

    issuer: str
    nonces: NonceSource | None = None
    advertised: list[str] | None = field(default_factory=lambda: list(ALGORITHMS))
    ignore_dpop: bool = False
    nonce_on_metadata: bool = False
    fickle_nonces: bool = False  # a new nonce secret after each refusal: the nonce just sent is never valid
    lifetime: int = 300
    signer: Signer = field(default_factory=Signer)
    replay: MemoryReplayCache = field(default_factory=MemoryReplayCache)
    proofs: list[DpopProof] = field(default_factory=list)
    raw_proofs: list[str] = field(default_factory=list)
    client_x5ts: list[str | None] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    posts: int = 0

    async def metadata(self, request: web.Request) -> web.Response:
        document: dict[str, Any] = {"issuer": self.issuer, "token_endpoint": f"{self.issuer}/token"}
        if self.advertised is not None:
            document["dpop_signing_alg_values_supported"] = self.advertised
        headers = {"DPoP-Nonce": self.nonces.current()} if self.nonces and self.nonce_on_metadata else None
        return web.json_response(document, headers=headers)

    async def token(self, request: web.Request) -> web.Response:
        self.posts += 1
        await request.post()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        x5t = certificate_thumbprint(der) if der else None
        self.client_x5ts.append(x5t)
        values = request.headers.getall("DPoP", [])
        if self.ignore_dpop or not values:
            return self._issued({"x5t#S256": x5t}, "Bearer")
        self.raw_proofs.append(values[0])
        try:
            proof = await self._check(values[0])
        except DpopProofError as exc:
            self.refusals.append(exc.error)
            if self.fickle_nonces:
                self.nonces = NonceSource(secrets.token_bytes(32))
            body = {"error": exc.error, "error_description": exc.description}
            return web.json_response(body, status=400, headers=exc.headers)
        self.proofs.append(proof)
        return self._issued({"jkt": proof.jkt}, "DPoP")

    async def _check(self, value: str) -> DpopProof:
        now = time.time()
        algorithms = self.advertised or ALGORITHMS
        proof = check_proof(value, htm="POST", htu=f"{self.issuer}/token", now=now, leeway=5.0, max_age=60.0,
                            algorithms=algorithms, nonce=self.nonces)  # fmt: skip
        await check_proof_unused(proof, self.replay, now=now, window=65.0)
        return proof

    def _issued(self, cnf: dict[str, Any], token_type: str) -> web.Response:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": str(WEB_ID), "client_id": str(WEB_ID), "aud": API, "iat": now,
                  "exp": now + self.lifetime, "jti": secrets.token_urlsafe(8), "cnf": cnf}  # fmt: skip
        body = {"access_token": self.signer.sign(claims), "token_type": token_type, "expires_in": self.lifetime,
                "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN}  # fmt: skip
        return web.json_response(body)

    def verifier(self, **policy: Any) -> AccessTokenVerifier:
        """A resource server for ``API`` that accepts this endpoint's tokens, DPoP-bound ones with ``policy``."""
        jwks = StaticJwksProvider(parse_jwks({"keys": [self.signer.jwk(alg="ES256")]}))
        return AccessTokenVerifier(issuer=self.issuer, audience=API, jwks=jwks, dpop=DpopPolicy(**policy))


@dataclass
class RunningDpopEndpoint:
    script: DpopTokenEndpoint
    ssl_context: SourceSSLContext
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.ssl_context.detach()


async def start_dpop_endpoint(source: InMemorySvidSource, **options: Any) -> RunningDpopEndpoint:
    """The fake on loopback TLS with ``source``'s SVID (client certificates requested, not required)."""
    port = free_port()
    script = DpopTokenEndpoint(issuer=f"https://127.0.0.1:{port}", **options)
    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", script.metadata)
    app.router.add_post("/token", script.token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    ssl_context = server_ssl_context(source, require_client_cert=False)
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return RunningDpopEndpoint(script, ssl_context, runner)


async def sidecar_post(
    socket_path: Path, path: str, body: object, *, content_type: str = "application/json", raw: bytes | None = None
) -> Reply:
    """One POST to the sidecar over its Unix socket: ``body`` as JSON, or ``raw`` bytes as they are."""
    data = raw if raw is not None else json.dumps(body).encode()
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"http://sc{path}", data=data, headers={"Content-Type": content_type}) as response,
    ):
        answer = await response.read()
        return Reply(response.status, dict(response.headers), json.loads(answer) if answer else None)
