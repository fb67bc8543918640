"""What the sync and async app clients share: the sidecar's answer, the token's binding, the response.

RFC 8705 §3: the token is bound to one certificate (``cnf.x5t#S256``), and the API compares it with the client
certificate of the connection the token arrives on. The app must therefore present the *same* X.509-SVID the
sidecar had when it got the token. Both get it from the Workload API, and SPIRE hands every workload that matches
one registration entry the same SVID; after a rotation the two may briefly disagree. :func:`token_binding` reads
the binding (without verifying the signature: the app only routes with it, the API verifies) so the clients can
wait for the sidecar to catch up instead of sending a token the API must refuse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from broker.appclient.sidecar import SidecarError, SidecarToken, parse_token_response
from broker.errors import BrokerError
from broker.jose.errors import JoseError
from broker.jose.jws import read_unverified
from broker.oauth.binding import X5tS256

__all__ = [
    "RETRY_DELAY",
    "AppResponse",
    "BindingDeadline",
    "BindingMismatchError",
    "SidecarError",
    "SidecarToken",
    "mismatch",
    "parse_token_response",
    "token_binding",
    "token_query",
]


RETRY_DELAY = 0.1  # between two asks while a rotation is in flight: the sidecar catches up within a moment


class BindingMismatchError(BrokerError):
    """The sidecar's token is bound to another certificate than this app's X.509-SVID, and stayed so."""

    error = "binding_mismatch"
    status = 0


@dataclass(frozen=True)
class AppResponse:
    """An API's answer: status, headers (names lower-cased) and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


def token_query(audience: str, scope: str | None) -> str:
    """The ``/v1/token`` path and query (RFC 3986 percent-encoding)."""
    return "/v1/token?" + urlencode({"audience": audience, **({"scope": scope} if scope else {})})


def token_binding(access_token: str) -> str | None:
    """The token's ``cnf.x5t#S256`` (RFC 8705 §3.1), read without verifying the signature; None if absent."""
    try:
        claims = read_unverified(access_token, canonical=False).payload
    except JoseError:
        return None
    bound = X5tS256.bound_in(claims)
    return bound if isinstance(bound, str) else None


def mismatch(bound: str | None) -> BindingMismatchError:
    """The error for a token that does not carry this app's certificate thumbprint."""
    what = "carries no certificate binding" if bound is None else "is bound to a certificate other than this app's"
    return BindingMismatchError(
        f"the sidecar's token {what}: the app and the sidecar must get the same X.509-SVID from the Workload API "
        "(match the same registration entry; see docs/apps.md)"
    )


class BindingDeadline:
    """The wait for the sidecar to bind its token to this app's SVID, shared by the sync and async clients.

    Each attempt: take the SVID, ask for a token, then :meth:`matches`; on ``False`` sleep :data:`RETRY_DELAY`
    (``time.sleep`` or ``asyncio.sleep``) and try again. Past ``wait`` seconds a mismatch raises.
    """

    def __init__(self, wait: float) -> None:
        self._deadline = time.monotonic() + wait

    def matches(self, access_token: str, x5t: str) -> bool:
        """Whether the token is bound to ``x5t``; raise :class:`BindingMismatchError` once the wait is over."""
        bound = token_binding(access_token)
        if bound is not None and X5tS256(x5t).matches(bound):
            return True
        if time.monotonic() >= self._deadline:
            raise mismatch(bound)
        return False
