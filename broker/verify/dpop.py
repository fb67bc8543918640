"""DPoP at a resource server (RFC 9449 §7): the policy, the request URI, and the ``DPoP`` challenges.

A verifier with a :class:`DpopPolicy` accepts ``Authorization: DPoP <token>`` with one ``DPoP`` header proof
(:meth:`~broker.verify.verifier.AccessTokenVerifier.verify_dpop`); without one it accepts the Bearer scheme only,
as before. Refusals on the DPoP scheme are 401 with ``WWW-Authenticate: DPoP error="invalid_dpop_proof"``,
``"invalid_token"`` or ``"use_dpop_nonce"`` (then with ``DPoP-Nonce``, §9) and ``algs`` (§7.1).

**The request URI** that ``htu`` must match (§4.3 item 9) is built deliberately, because the client chooses the
``Host`` header:

* with ``DpopPolicy(origin="https://api.example.org")`` the origin is the configured one and only the path comes
  from the request: use this behind a TLS-terminating proxy or load balancer, or whenever clients address the
  server by a name it cannot see;
* without it, the scheme comes from the server's own connection (TLS or not: never ``X-Forwarded-Proto``), the
  authority from the ``Host`` header (what the client addressed, RFC 9110 §7.2), and the path from the raw
  request target (:meth:`DpopPolicy.request_uri`). A proof made for another host then matches only if the client
  sent that host, and the token's audience still has to be this resource server's.

Proof ``jti`` values are remembered in the verifier's replay cache (by default a bounded in-memory
:class:`~broker.oauth.replay.MemoryReplayCache` per verifier; pass a shared one to run replicas, §11.1).
Server nonces (§9, :class:`~broker.oauth.dpop_nonce.NonceSource`) are off unless ``nonces`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from broker.errors import DpopProofError, InvalidTokenError, OAuthError
from broker.jose import jws
from broker.oauth._rfc3986 import normalize_http_uri
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import ReplayCache

__all__ = ["DEFAULT_DPOP_ALGORITHMS", "DpopPolicy", "dpop_challenge", "dpop_refusal"]

DEFAULT_DPOP_ALGORITHMS = ("ES256", "ES384", "ES512", "PS256")


@dataclass(frozen=True)
class DpopPolicy:
    """How a resource server checks DPoP proofs (RFC 9449 §7): algorithms, proof age, the public origin."""

    algorithms: Iterable[str] = DEFAULT_DPOP_ALGORITHMS
    max_age: float = 60.0  # §11.1: how old (by iat) a proof may be
    leeway: float = 5.0  # clock skew allowed on iat
    origin: str | None = None  # e.g. "https://api.example.org"; see the module docstring
    nonces: NonceSource | None = None  # §9: off unless given
    replay_cache: ReplayCache | None = field(default=None, compare=False)  # None: one in memory per verifier
    allowed: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        allowed = frozenset(self.algorithms)
        if not allowed or not allowed <= frozenset(jws.ALGORITHMS):
            raise ValueError(f"DPoP algorithms must be a non-empty subset of {sorted(jws.ALGORITHMS)}")
        if not all(math.isfinite(v) and v >= 0 for v in (self.max_age, self.leeway)):
            raise ValueError("max_age and leeway must be non-negative seconds")
        if self.origin is not None:
            normal = normalize_http_uri(self.origin)
            if normal is None or not normal.endswith("/") or normal.count("/") != 3:
                raise ValueError("origin must be an http(s) origin such as https://api.example.org")
            object.__setattr__(self, "origin", normal.rstrip("/"))
        object.__setattr__(self, "allowed", allowed)

    @property
    def window(self) -> float:
        """How long a proof's ``jti`` is remembered after its ``iat`` (§11.1)."""
        return self.max_age + self.leeway

    def request_uri(self, *, scheme: str, host: str | None, target: str) -> str:
        """The request's URI for ``htu``: the configured origin, else ``scheme://host`` (no host: matches nothing);
        then the request target as received (its query is ignored by the comparison)."""
        path = target if target.startswith("/") else "/" + target
        origin = self.origin or f"{scheme}://{host or ''}"
        return origin + path

    def challenge(self, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value (§7.1)."""
        return dpop_challenge(error, sorted(self.allowed))


def dpop_challenge(error: str | None, algorithms: Iterable[str], *, realm: str = "spiffe-broker") -> str:
    """RFC 9449 §7.1: ``DPoP error="...", algs="ES256 ..."``; with no error (no credentials), the realm instead."""
    first = f'error="{error}"' if error else f'realm="{realm}"'
    return f'DPoP {first}, algs="{" ".join(algorithms)}"'


def dpop_refusal(exc: OAuthError, policy: DpopPolicy) -> OAuthError:
    """``exc`` as a resource server answers it on the DPoP scheme (§7.1, §9): 401 with a DPoP challenge for an
    invalid token or proof; anything else (503 from the replay cache or a stale feed) unchanged."""
    if isinstance(exc, DpopProofError | InvalidTokenError):
        exc.status = 401
        exc.headers["WWW-Authenticate"] = policy.challenge(exc.error)
    return exc
