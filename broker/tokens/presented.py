"""A token presented back to the broker that issued it: at ``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662).

Both endpoints ask the same two questions, through two small Protocols the server implements:

* :class:`TokenCheck`: is this a token this broker issued, still within its lifetime? The answer is a
  :class:`CheckedToken` (signature against the broker's own published keys, ``iss``, ``typ``, times, subject; the
  checks of :class:`broker.verify.AccessTokenVerifier`, run by the server), or None for anything else: malformed,
  forged, expired, from another issuer. The caller never learns which;
* :class:`Revocations`: is it cut off by the revocation log (revoked ``jti``, revoked ``kid``, quarantined
  subject), as of a read of the log made after the request arrived, and revoke it.

Neither looks at the certificate binding (``cnf``, RFC 8705 §3): the caller of these endpoints is the token's
holder or a resource server, not a client presenting the token for access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from broker.errors import InvalidRequestError

__all__ = ["CheckedToken", "Revocations", "TokenCheck", "token_parameter"]


@dataclass(frozen=True, slots=True)
class CheckedToken:
    """An access token this broker issued whose signature and claims verified; ``claims`` as signed."""

    jti: str
    kid: str
    subject: str
    audiences: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    claims: Mapping[str, Any] = field(repr=False, compare=False)


class TokenCheck(Protocol):
    async def check(self, token: str) -> CheckedToken | None:
        """The token if this broker issued it and it has not expired; None otherwise (never says why)."""
        ...


class Revocations(Protocol):
    async def catch_up(self) -> None:
        """Read the revocation log's entries committed before this call (a store error propagates)."""
        ...

    def refusal(self, token: CheckedToken) -> str | None:
        """Why ``token`` is cut off now (``revoked``, ``key_revoked``, ``quarantined``), or None."""
        ...

    async def revoke(self, token: CheckedToken) -> bool:
        """Put ``token``'s ``jti`` on the log until its ``exp``, unless the log already cuts it off; whether an
        entry was appended."""
        ...


def token_parameter(params: Mapping[str, str]) -> str:
    """The request's ``token`` (RFC 7009 §2.1, RFC 7662 §2.1: REQUIRED); ``invalid_request`` without one."""
    token = params.get("token")
    if token is None:
        raise InvalidRequestError("missing parameter 'token'")
    return token
