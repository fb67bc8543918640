"""What an RFC 8693 exchange gives the sidecar: :class:`TokenResult`, parsed from the token service's answer by
:func:`parse_token_response`, and the :class:`Exchanger` Protocol that produces it (the real one is
:class:`~broker.sidecar.exchanger.TokenServiceClient`; tests and integrators pass their own).

The access token's header and claims are read *without* verification (:func:`token_claims_unverified`): only for
cache bookkeeping (expiry, the binding it carries, ``jti`` and ``kid`` to drop it when the revocation feed says
so), never for trust; the token service is authenticated by mTLS before its answer is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.jose.errors import JoseError
from broker.jose.jws import read_unverified
from broker.oauth.binding import Jkt, X5tS256
from broker.oauth.constants import TOKEN_TYPE_ACCESS_TOKEN
from broker.sidecar.errors import TokenServiceUnavailableError

__all__ = ["Exchanger", "TokenResult", "parse_token_response", "token_claims_unverified"]


@dataclass(frozen=True)
class TokenResult:
    """A successful RFC 8693 §2.2.1 response. ``bound_x5t`` is the token's ``cnf.x5t#S256`` (RFC 8705 §3.1),
    ``bound_jkt`` its ``cnf.jkt`` (RFC 9449 §6.1)."""

    access_token: str = field(repr=False)
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750 token type name
    issued_token_type: str = TOKEN_TYPE_ACCESS_TOKEN
    scope: str | None = None
    bound_x5t: str | None = None
    jti: str | None = None  # jti, kid and iat read without verification: to drop the token if the feed revokes it
    kid: str | None = None
    issued_at: float | None = None
    bound_jkt: str | None = None


class Exchanger(Protocol):
    """Turns the workload's identity into an access token for ``audience`` (and ``scope``)."""

    async def exchange(self, audience: str, scope: str | None) -> TokenResult: ...


def token_claims_unverified(access_token: str) -> dict[str, Any]:
    """The payload of a JWT access token *without* verifying it: only for cache bookkeeping, never for trust."""
    return _unverified(access_token)[1]


def _unverified(access_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        compact = read_unverified(access_token, canonical=False)
    except JoseError:
        return {}, {}
    return dict(compact.header), dict(compact.payload)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_token_response(body: object, *, requested_scope: str | None, now: float) -> TokenResult:
    """Validate a 200 token response (RFC 6749 §5.1, RFC 8693 §2.2.1); expiry falls back to the JWT ``exp``."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise TokenServiceUnavailableError("token service sent a malformed token response")
    token: str = body["access_token"]
    header, claims = _unverified(token)
    expires_in = body.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise TokenServiceUnavailableError("token response has no usable expires_in")
        expires_in = int(exp - now)
    bound, jkt = X5tS256.bound_in(claims), Jkt.bound_in(claims)
    scope = body.get("scope")
    iat = claims.get("iat")
    return TokenResult(
        access_token=token,
        expires_in=expires_in,
        token_type=str(body.get("token_type") or "Bearer"),
        issued_token_type=str(body.get("issued_token_type") or TOKEN_TYPE_ACCESS_TOKEN),
        scope=scope if isinstance(scope, str) else requested_scope,
        bound_x5t=bound if isinstance(bound, str) else None,
        jti=_text(claims.get("jti")),
        kid=_text(header.get("kid")),
        issued_at=float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None,
        bound_jkt=jkt if isinstance(jkt, str) else None,
    )
