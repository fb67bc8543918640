"""The one error response of the broker, framework-free: RFC 6749 §5.2 body, RFC 6750 §3 challenge, headers.

* :func:`public_error`: what a client may see of any :class:`~broker.errors.BrokerError`: an
  :class:`~broker.errors.OAuthError` as it is; another (identity, configuration) becomes
  ``temporarily_unavailable`` (503) if it says so, else ``server_error`` (500), its description kept for the log.
* :func:`error_document` / :func:`error_json`: ``{"error"[, "error_description"]}`` (RFC 6749 §5.2: an empty
  description is omitted).
* :data:`NO_STORE`: RFC 6749 §5.1 ``Cache-Control: no-store`` and ``Pragma: no-cache``.
* :func:`bearer_challenge`: a resource server's refusal (RFC 6750 §3) as ``(status, headers, body)``, for the
  ASGI and WSGI middleware. ``invalid_request`` gets an ``error="invalid_request"`` challenge if it has none,
  and ``temporarily_unavailable`` a ``Retry-After: 1``.

The aiohttp responses built from these live in :mod:`broker.web.errors`.
"""

from __future__ import annotations

import json

from broker.errors import (
    BrokerError,
    InvalidRequestError,
    OAuthError,
    ServerError,
    StoreError,
    StoreUnavailableError,
    TemporarilyUnavailableError,
)

__all__ = ["NO_STORE", "bearer_challenge", "error_document", "error_json", "public_error"]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_COMPACT = (",", ":")


def public_error(exc: BrokerError) -> OAuthError:
    """``exc`` if it carries an OAuth wire code, else the generic 503 or 500 that reveals nothing.

    A store error never shows its details (store URL, paths, driver text): only a generic description.
    """
    if isinstance(exc, StoreError):
        if exc.status == 503:
            return TemporarilyUnavailableError(StoreUnavailableError.PUBLIC_DESCRIPTION)
        return ServerError()
    if isinstance(exc, OAuthError):
        return exc
    return TemporarilyUnavailableError("try again later") if exc.status == 503 else ServerError()


def error_document(error: str, description: str = "") -> dict[str, str]:
    """RFC 6749 §5.2: ``error`` and, when there is one, ``error_description``."""
    return {"error": error, "error_description": description} if description else {"error": error}


def error_json(error: str, description: str = "", *, compact: bool = False) -> bytes:
    """:func:`error_document` serialised (``compact``: without spaces after separators)."""
    return json.dumps(error_document(error, description), separators=_COMPACT if compact else None).encode()


def bearer_challenge(exc: OAuthError, *, realm: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a refused resource request; ``Cache-Control: no-store`` (RFC 6749 §5.1)."""
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **exc.headers}
    if isinstance(exc, InvalidRequestError) and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = f'Bearer realm="{realm}", error="invalid_request"'
    if isinstance(exc, TemporarilyUnavailableError):
        headers["Retry-After"] = "1"
    return exc.status, list(headers.items()), error_json(exc.error, exc.description)
