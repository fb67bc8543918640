"""DPoP at the token endpoint (RFC 9449 §5): a token request with a ``DPoP`` proof gets a token bound to the proof's
key (``cnf.jkt``, §6.1) and ``token_type: DPoP``.

:class:`DpopBinding` is the endpoint's :class:`~broker.tokens.endpoint.SenderConstraint`:

* no ``DPoP`` header: the client certificate's binding (RFC 8705 §3), or a refusal when the token would be a bearer
  token and bearer tokens are not allowed (:class:`~broker.tokens.endpoint.CertificateBinding`);
* more than one ``DPoP`` header: ``invalid_dpop_proof`` (§4.3 item 1);
* before the client authenticates (:meth:`DpopBinding.precheck`): a proof without a valid server nonce, when
  nonces are required, is answered ``use_dpop_nonce`` at once, so no client assertion is spent on it;
* one proof: every check of §4.3 (:func:`broker.oauth.dpop.check_proof`) with ``htm`` ``POST`` and ``htu`` the
  token endpoint URL built from the configured issuer (never from the request's ``Host`` header, which the client
  chooses), the server nonce when nonces are required (§8: ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``), then
  the replay cache (§11.1: each key and ``jti`` once, kept for ``max_age + leeway``). Its ``iat`` feeds the
  client's clock-drift record.

A proof over mutual TLS binds the token to the DPoP key: the client asked for DPoP (§5), and the resource server
then checks the proof, not the certificate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from broker.errors import InvalidDpopProofError
from broker.oauth.binding import Binding, Jkt
from broker.oauth.dpop import check_proof, check_proof_nonce, check_proof_unused
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import ReplayCache
from broker.tokens.client_auth import RequestContext
from broker.tokens.drift import DriftSource, DriftTracker
from broker.tokens.endpoint import CertificateBinding
from broker.tokens.issuer import AuthenticatedClient

__all__ = ["DEFAULT_DPOP_ALGORITHMS", "DpopBinding"]

DEFAULT_DPOP_ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512")


class DpopBinding:
    """The sender constraint of a token endpoint at ``token_endpoint`` that serves DPoP (see the module docstring)."""

    def __init__(
        self,
        *,
        token_endpoint: str,
        replay: ReplayCache,
        drift: DriftTracker,
        algorithms: Collection[str] = DEFAULT_DPOP_ALGORITHMS,
        max_age: float = 60.0,
        nonces: NonceSource | None = None,
        allow_bearer: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._htu = token_endpoint
        self._replay = replay
        self._drift = drift
        self.algorithms = tuple(algorithms)
        self._max_age = max_age
        self._nonces = nonces
        self._without_proof = CertificateBinding(allow_bearer=allow_bearer)
        self._clock = clock

    async def binding(self, client: AuthenticatedClient, context: RequestContext) -> Binding | None:
        if not context.dpop:
            return await self._without_proof.binding(client, context)
        if len(context.dpop) > 1:
            raise InvalidDpopProofError("send at most one DPoP header (RFC 9449 §4.3 item 1)")
        now, leeway = self._clock(), self._drift.leeway
        proof = check_proof(context.dpop[0], htm="POST", htu=self._htu, now=now, leeway=leeway,
                            max_age=self._max_age, algorithms=self.algorithms, nonce=self._nonces)  # fmt: skip
        await check_proof_unused(proof, self._replay, now=now, window=self._max_age + leeway)
        self._drift.record(client.client_id, DriftSource.DPOP, now=now, iat=proof.iat)
        return Jkt(proof.jkt)

    def precheck(self, context: RequestContext) -> None:
        """With server nonces (§8): a lone proof without a valid nonce is answered ``use_dpop_nonce`` before the
        client authenticates, so the client's assertion is not spent on a request the server asks it to repeat.
        The proof is only parsed here (its nonce is no secret: anyone may get a fresh one this way); every check
        of §4.3 runs in :meth:`binding`."""
        if self._nonces is None or len(context.dpop) != 1:
            return
        check_proof_nonce(context.dpop[0], self._nonces)

    def success_headers(self) -> dict[str, str]:
        """RFC 9449 §8.2: with server nonces, every token response carries the current one in ``DPoP-Nonce``, so a
        client's next request need not be refused first to learn it."""
        return {} if self._nonces is None else {"DPoP-Nonce": self._nonces.current()}

    def metadata(self) -> dict[str, Any]:
        """RFC 9449 §5.1 ``dpop_signing_alg_values_supported``."""
        return {"dpop_signing_alg_values_supported": list(self.algorithms)}
