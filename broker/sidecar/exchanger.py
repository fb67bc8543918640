"""The sidecar's client of the token service: RFC 8693 token exchange over mTLS.

One exchange: fetch a JWT-SVID whose audience is the token service's issuer URL, then POST the RFC 8693 §2.1
form (``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``, the JWT-SVID as ``subject_token``, the
target as ``audience``, optional ``scope``) to the ``token_endpoint`` named by the issuer's RFC 8414 metadata,
over mTLS with the workload's X.509-SVID (RFC 8705 §2: the token comes back bound to that certificate).

With a DPoP signer (``token_binding = "dpop"``, :mod:`broker.sidecar.dpop`) the same request also carries a
``DPoP`` proof (RFC 9449 §5) made with the SVID's private key, ``htm`` ``POST`` and ``htu`` the token endpoint,
and the token comes back bound to that key (``cnf.jkt``, §6.1; ``token_type: DPoP``). The algorithm is one the
metadata advertises (``dpop_signing_alg_values_supported``, §5.1). Server nonces (§8): the latest ``DPoP-Nonce``
of any response is kept and sent in the next proof; a ``use_dpop_nonce`` refusal that brings a new nonce is
retried once at once. A token not bound to the proof's key is refused (the token service does not serve DPoP);
one bound to a key that rotated meanwhile is exchanged again.

The token service is authenticated by SPIFFE ID on every new connection before anything is sent
(:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector`). Transport errors, 408, 429 and 5xx are retried with
exponential backoff and full jitter; RFC 6749 §5.2 errors are not retried and pass through to the app. When the
X.509-SVID rotates the keep-alive session is replaced, so new exchanges present the new certificate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from broker import tracing
from broker._logging import REQUEST_ID, REQUEST_ID_HEADER, new_request_id
from broker.errors import NetworkError
from broker.identity.errors import IdentityError
from broker.identity.source import JwtSvidSource, X509ContextSource, current_x5t
from broker.identity.spiffetls.connector import map_network_errors
from broker.identity.spiffetls.context import ServerIdMatcher
from broker.identity.spiffetls.session import SvidSession
from broker.oauth.binding import Jkt
from broker.oauth.constants import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from broker.oauth.metadata import AuthorizationServerMetadata, MetadataError, check_issuer, metadata_url
from broker.sidecar.dpop import NonceMemory, SignedProof, SvidProofSigner
from broker.sidecar.errors import (
    DpopKeyError,
    TokenServiceRefusedError,
    TokenServiceUnavailableError,
    refusal_from_response,
)
from broker.sidecar.health import TokenServiceHealth
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.token_result import TokenResult, parse_token_response

__all__ = ["ExchangeSource", "TokenServiceClient"]

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 429})
_USE_DPOP_NONCE = "use_dpop_nonce"


class _RetryableError(NetworkError):
    """A failure worth another attempt (transport error, timeout, 408/429/5xx); ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExchangeSource(X509ContextSource, JwtSvidSource, Protocol):
    """What the exchange needs: mTLS with the X.509-SVID, and a JWT-SVID as the subject token (RFC 8693 §2.1)."""


@dataclass(frozen=True)
class _Reply:
    status: int
    body: object = field(repr=False)


def _error_code(body: object) -> object:
    return body.get("error") if isinstance(body, dict) else None


def _dpop_algorithms(body: object) -> tuple[str, ...] | None:
    """RFC 9449 §5.1 ``dpop_signing_alg_values_supported`` from a metadata document; None when absent or unusable."""
    values = body.get("dpop_signing_alg_values_supported") if isinstance(body, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return tuple(values)


class TokenServiceClient:
    """The real :class:`Exchanger`; also probes the token service and records its reachability in ``health``."""

    def __init__(
        self,
        *,
        source: ExchangeSource,
        issuer: str,
        server_id: ServerIdMatcher,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        dpop: SvidProofSigner | None = None,
    ) -> None:
        """``dpop``: bind tokens to the SVID key with DPoP proofs (RFC 9449) instead of to the certificate."""
        self._source = source
        self._issuer = check_issuer(issuer)
        self._metadata_url = metadata_url(issuer)
        self._server_id = server_id
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._metadata: AuthorizationServerMetadata | None = None
        self._dpop = dpop
        self._dpop_algorithms: tuple[str, ...] | None = None
        self.dpop_nonce = NonceMemory()
        self._http = SvidSession(source, server_id, timeout)
        self.health = TokenServiceHealth(self._issuer)
        self.exchange_count = 0  # token requests sent (for tests and metrics)

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def reachable(self) -> bool:
        return self.health.reachable

    async def exchange(self, audience: str, scope: str | None) -> TokenResult:
        """Exchange the workload's JWT-SVID for an access token, retrying transient failures (one span,
        ``spiffe-broker.sidecar.exchange``, for all attempts: :mod:`broker.tracing`)."""
        outside_a_request = REQUEST_ID.get() is None  # token files, probes: one id for all attempts of this one
        token = REQUEST_ID.set(new_request_id()) if outside_a_request else None
        try:
            with tracing.span("spiffe-broker.sidecar.exchange", {"oauth.audience": audience}, client=True):
                return await self._exchange_retrying(audience, scope)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)

    async def _exchange_retrying(self, audience: str, scope: str | None) -> TokenResult:
        reason = "no attempt made"
        for attempt in range(self._retry.attempts):
            if attempt:
                await self._sleep(self._retry.delay(attempt - 1))
            try:
                result = await self._exchange_once(audience, scope)
            except _RetryableError as exc:
                reason = exc.reason
                log.debug("token exchange attempt %d failed: %s", attempt + 1, reason)  # state changes: health
                continue
            except TokenServiceRefusedError:
                self.health.success()  # it answered: reachable, and the refusal goes to the app
                raise
            except TokenServiceUnavailableError as exc:  # unusable metadata or token response: no retry
                self.health.failure(exc.description)
                raise
            except DpopKeyError as exc:  # it answered, but takes no algorithm the SVID key signs with
                self.health.success()
                raise TokenServiceUnavailableError(exc.description) from None
            self.health.success()
            log.info("token for %s obtained (expires in %ss)", audience, result.expires_in)
            return result
        self.health.failure(reason)
        raise TokenServiceUnavailableError(
            f"token service unreachable ({self._retry.attempts} attempts, last error: {reason})"
        )

    async def probe(self) -> bool:
        """Fetch the RFC 8414 metadata: True if the token service answered correctly (recorded in ``health``).

        Without an X.509-SVID there is nothing to connect with: False, and the token service's health is left as
        it was (that is the Workload API's problem, not the token service's).
        """
        try:
            await self._fetch_metadata()
        except _RetryableError as exc:
            self.health.failure(exc.reason)
            return False
        except TokenServiceUnavailableError as exc:
            self.health.failure(exc.description)
            return False
        except IdentityError:
            return False
        self.health.success()
        return True

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _exchange_once(self, audience: str, scope: str | None) -> TokenResult:
        endpoint = await self._token_endpoint()
        svid = await self._source.fetch_jwt_svid(self._issuer)
        form = {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": svid.token,
            "subject_token_type": TOKEN_TYPE_JWT,
            "requested_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "audience": audience,
        }
        if scope:
            form["scope"] = scope
        if self._dpop is not None:
            return await self._exchange_dpop(endpoint, form, scope, self._dpop)
        reply = await self._post_token(endpoint, form, None)
        result = parse_token_response(reply.body, requested_scope=scope, now=time.time())
        if result.bound_x5t is not None and result.bound_x5t != current_x5t(self._source):
            self._http.retire()  # the connection still presented the certificate that has just rotated
            raise _RetryableError("token bound to a rotated certificate")
        return result

    async def _exchange_dpop(
        self, endpoint: str, form: dict[str, str], scope: str | None, signer: SvidProofSigner
    ) -> TokenResult:
        """RFC 9449 §5: the token comes back bound to the key that signed the proof (``cnf.jkt``, §6.1)."""
        reply, signed = await self._post_with_proof(endpoint, form, signer)
        result = parse_token_response(reply.body, requested_scope=scope, now=time.time())
        if result.bound_jkt is None or not Jkt(signed.jkt).matches(result.bound_jkt):
            raise TokenServiceUnavailableError(
                "the token service did not bind the token to the DPoP key (RFC 9449 §6.1): does it serve DPoP?"
            )
        if signer.jkt() != signed.jkt:
            raise _RetryableError("token bound to a rotated SVID key")
        return result

    async def _post_with_proof(
        self, endpoint: str, form: dict[str, str], signer: SvidProofSigner
    ) -> tuple[_Reply, SignedProof]:
        """POST with a proof; a ``use_dpop_nonce`` refusal that brought a new nonce is retried once (§8)."""
        sent_nonce = self.dpop_nonce.value
        signed = signer.sign(htm="POST", htu=endpoint, nonce=sent_nonce, advertised=self._dpop_algorithms)
        try:
            return await self._post_token(endpoint, form, {"DPoP": signed.proof}), signed
        except TokenServiceRefusedError as exc:
            if exc.error != _USE_DPOP_NONCE or self.dpop_nonce.value in (None, sent_nonce):
                raise
        signed = signer.sign(htm="POST", htu=endpoint, nonce=self.dpop_nonce.value, advertised=self._dpop_algorithms)
        return await self._post_token(endpoint, form, {"DPoP": signed.proof}), signed

    async def _post_token(self, endpoint: str, form: dict[str, str], headers: dict[str, str] | None) -> _Reply:
        """POST the form; a 200 reply, or the refusal (:class:`TokenServiceRefusedError`) or a retryable error."""
        self.exchange_count += 1
        reply = await self._request("POST", endpoint, form, headers)
        if reply.status in _RETRYABLE_STATUS or reply.status >= 500:
            raise _RetryableError(f"token endpoint answered HTTP {reply.status}")
        if reply.status != 200:
            raise refusal_from_response(reply.status, reply.body)
        return reply

    async def _token_endpoint(self) -> str:
        metadata = self._metadata or await self._fetch_metadata()
        assert metadata.token_endpoint is not None
        return metadata.token_endpoint

    async def _fetch_metadata(self) -> AuthorizationServerMetadata:
        reply = await self._request("GET", self._metadata_url, None)
        status, body = reply.status, reply.body
        if status in _RETRYABLE_STATUS or status >= 500:
            raise _RetryableError(f"metadata endpoint answered HTTP {status}")
        if status != 200:
            raise TokenServiceUnavailableError(f"metadata endpoint answered HTTP {status}")
        try:
            metadata = AuthorizationServerMetadata.from_document(body, issuer=self._issuer)
        except MetadataError as exc:
            raise TokenServiceUnavailableError(str(exc)) from None
        if metadata.token_endpoint is None:
            raise TokenServiceUnavailableError("metadata has no token_endpoint")
        self._metadata = metadata
        self._dpop_algorithms = _dpop_algorithms(body)
        return metadata

    async def _request(
        self, method: str, url: str, form: dict[str, str] | None, headers: dict[str, str] | None = None
    ) -> _Reply:
        """One request; the latest ``DPoP-Nonce`` of any response is remembered (RFC 9449 §8). It carries the
        current request id (:mod:`broker._logging`; the app's request, or a new one), so the token service's log
        lines for it show the same id as the sidecar's."""
        headers = {**(headers or {}), REQUEST_ID_HEADER: REQUEST_ID.get() or new_request_id()}
        tracing.inject(headers)
        with map_network_errors(lambda exc: _RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}")):
            async with self._http.get().request(
                method, url, data=form, headers=headers, allow_redirects=False
            ) as response:
                status, raw = response.status, await response.read()
                self.dpop_nonce.remember(response.headers.get("DPoP-Nonce"))
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return _Reply(status, body)
