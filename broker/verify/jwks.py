"""The broker's signing keys for resource servers: RFC 8414 metadata -> ``jwks_uri`` -> RFC 7517 JWK Set.

Keys are imported once (``cryptography`` public keys) and looked up by ``kid``. A ``kid`` not in the cache makes
the provider fetch again (the broker may have rotated its key), but at most once per ``min_refetch_interval``
(default 30 s) so tokens with made-up ``kid`` values cannot turn the resource server into a load generator for
the token service. Keys older than ``max_age`` are refreshed in the background (keep ``max_age`` at or below the
broker's ``[keyring] jwks_max_age``, the JWKS ``Cache-Control: max-age``, 300 s by default: the rotation schedule
publishes each key that long before it signs); a failed fetch keeps the last good keys. Only EC signature keys
(``use`` absent or ``sig``) with a ``kid`` are kept (RFC 7517 §4.2, §4.5). A key the revocation feed reports
revoked (:meth:`RemoteJwksProvider.revoke`) is dropped at once and never taken from a later fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import NetworkError
from broker.identity.source import X509ContextSource
from broker.identity.spiffetls.connector import ServerIdentityError, SpiffeTLSConnector, map_network_errors
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, client_ssl_context
from broker.jose import jwk as jose_jwk
from broker.jose.errors import InvalidJwkError
from broker.jose.jws import ES_ALGORITHMS
from broker.oauth.metadata import AuthorizationServerMetadata, MetadataError, check_issuer, metadata_url

__all__ = [
    "FetchJson",
    "HttpsJsonFetcher",
    "JwksFetchError",
    "JwksProvider",
    "RemoteJwksProvider",
    "StaticJwksProvider",
    "VerificationKey",
    "parse_jwks",
]

log = logging.getLogger(__name__)

FetchJson = Callable[[str], Awaitable[object]]
MAX_DOCUMENT_BYTES = 256 * 1024


class JwksFetchError(NetworkError):
    """Metadata or JWKS could not be fetched or used; the message is safe to log."""


@dataclass(frozen=True)
class VerificationKey:
    """A public key from the JWKS; ``alg`` is the JWK's declared algorithm, if any (RFC 7517 §4.4)."""

    kid: str
    public_key: ec.EllipticCurvePublicKey = field(repr=False)
    alg: str | None = None


class JwksProvider(Protocol):
    """Signing keys by ``kid``: ``cached_key`` never waits; ``get_key`` may fetch (rate-limited)."""

    def cached_key(self, kid: str) -> VerificationKey | None: ...

    async def get_key(self, kid: str) -> VerificationKey | None: ...


def _ec_key(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey | None:
    try:
        return jose_jwk.ec_public_key(jwk)
    except InvalidJwkError:
        return None


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """The usable keys of a JWK Set by ``kid``; unusable entries are skipped, a duplicated ``kid`` is dropped."""
    keys = jose_jwk.jwks_keys(document)
    if keys is None:
        raise JwksFetchError("JWKS has no 'keys' array")
    found: dict[str, VerificationKey] = {}
    duplicated: set[str] = set()
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("use", "sig") != "sig":
            continue
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or not kid or (alg is not None and alg not in ES_ALGORITHMS):
            continue
        public_key = _ec_key(jwk)
        if public_key is None:
            continue
        if kid in found:
            duplicated.add(kid)
        found[kid] = VerificationKey(kid, public_key, alg if isinstance(alg, str) else None)
    for kid in duplicated:  # ambiguous: which key did the issuer mean?
        del found[kid]
    return found


class StaticJwksProvider:
    """Fixed keys (tests, or keys distributed out of band)."""

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_document(cls, document: object) -> StaticJwksProvider:
        return cls(parse_jwks(document))

    def cached_key(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    async def get_key(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)


class RemoteJwksProvider:
    """Keys of ``issuer`` found through its RFC 8414 metadata, fetched with ``fetch_json``."""

    def __init__(
        self,
        *,
        issuer: str,
        fetch_json: FetchJson,
        clock: Callable[[], float] = time.monotonic,
        min_refetch_interval: float = 30.0,
        initial_retry_interval: float = 1.0,
        max_age: float = 300.0,
    ) -> None:
        self._issuer = check_issuer(issuer)
        self._fetch_json = fetch_json
        self._clock = clock
        self._min_refetch_interval = min_refetch_interval
        self._initial_retry_interval = initial_retry_interval
        self._max_age = max_age
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt
        self._inflight: asyncio.Task[None] | None = None
        self._revoked: set[str] = set()
        self.fetch_count = 0

    @property
    def issuer(self) -> str:
        return self._issuer

    def cached_key(self, kid: str) -> VerificationKey | None:
        key = self._keys.get(kid)
        if key is not None and self._fetched_at is not None and self._clock() - self._fetched_at > self._max_age:
            self._refresh_in_background()
            return key
        return key

    async def get_key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid``; an unknown ``kid`` triggers at most one fetch per ``min_refetch_interval``."""
        key = self.cached_key(kid)
        if key is not None:
            return key
        if self._inflight is None and not self._may_fetch():
            return None
        # A fetch in flight (another request's, or the first one at start) is awaited, not counted against the
        # rate limit: concurrent first requests must not be refused while the JWKS is on its way.
        with contextlib.suppress(JwksFetchError):  # logged once by _landed; the token is refused either way
            await asyncio.shield(self._refresh())
        return self._keys.get(kid)

    def revoke(self, kid: str) -> None:
        """Drop ``kid`` now and never take it from the JWKS again (the revocation feed said it is revoked)."""
        self._revoked.add(kid)
        self._keys.pop(kid, None)

    async def refresh(self) -> None:
        """Fetch now (e.g. at start-up), ignoring the rate limit; raises :class:`JwksFetchError` on failure."""
        await asyncio.shield(self._refresh())
        if self._fetched_at is None:
            raise JwksFetchError("no keys fetched from the issuer")

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        interval = self._min_refetch_interval if self._fetched_at is not None else self._initial_retry_interval
        return self._clock() - self._attempted_at >= interval

    def _refresh_in_background(self) -> None:
        """Refresh stale keys. Not held back by ``min_refetch_interval`` (that limit is for unknown ``kid``s): the
        key rotation schedule publishes a key ``jwks_max_age`` before it signs, so a verifier must not keep
        the JWKS much longer than its ``max_age`` (at most one attempt per ``max_age`` while fetches fail)."""
        if self._inflight is not None:
            return
        since = None if self._attempted_at is None else self._clock() - self._attempted_at
        if since is None or since >= min(self._max_age, self._min_refetch_interval):
            self._refresh()

    def _refresh(self) -> asyncio.Task[None]:
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(self._landed)
        return self._inflight

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("JWKS refresh for %s failed: %s", self._issuer, task.exception())

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            metadata = AuthorizationServerMetadata.from_document(
                await self._fetch_json(metadata_url(self._issuer)), issuer=self._issuer
            )
        except MetadataError as exc:
            raise JwksFetchError(str(exc)) from None
        if metadata.jwks_uri is None:
            raise JwksFetchError("issuer metadata has no jwks_uri")
        keys = parse_jwks(await self._fetch_json(metadata.jwks_uri))
        self._keys = keys = {kid: key for kid, key in keys.items() if kid not in self._revoked}
        self._fetched_at = self._clock()
        log.info("fetched %d signing key(s) of %s", len(keys), self._issuer)


class HttpsJsonFetcher:
    """GET JSON over mTLS with the caller's X.509-SVID from a server whose SPIFFE ID matches ``server_id``.

    The server's identity is checked right after each handshake (:class:`SpiffeTLSConnector`): once a small
    response has been read aiohttp has already released its connection, so checking afterwards is not possible.
    """

    def __init__(self, *, source: X509ContextSource, server_id: ServerIdMatcher, timeout: float = 5.0) -> None:
        self._source = source
        self._server_id = server_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._context: SourceSSLContext | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> object:
        def failed(exc: Exception) -> JwksFetchError:
            return JwksFetchError(f"GET {url}: {exc if isinstance(exc, ServerIdentityError) else type(exc).__name__}")

        with map_network_errors(failed):
            async with self._open().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise JwksFetchError(f"GET {url}: HTTP {response.status}")
                raw = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise JwksFetchError(f"GET {url}: document too large")
        try:
            return json.loads(raw)
        except ValueError:
            raise JwksFetchError(f"GET {url}: not JSON") from None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._context = client_ssl_context(self._source, server_id=self._server_id)
            self._session = aiohttp.ClientSession(connector=SpiffeTLSConnector(self._context), timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._context is not None:
            self._context.detach()
        if self._session is not None:
            await self._session.close()
        self._session = self._context = None
