"""Reading a token request: the client's X.509-SVID from the connection, and a bounded form body.

RFC 6749 §3.2: the token endpoint takes POST with ``application/x-www-form-urlencoded`` parameters in the body.
Parameters in the query string are refused (they end up in logs and proxies). The body is read up to
``max_body`` bytes; a larger body is ``invalid_request`` with status 400 (not 413: every refusal of this endpoint
is an RFC 6749 §5.2 error a client already knows how to read). Percent-decoded text must be UTF-8.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from urllib.parse import parse_qs

from aiohttp import web

from broker.errors import InvalidClientError, InvalidRequestError
from broker.identity.bundle import X509BundleSet
from broker.identity.errors import X509SvidError
from broker.identity.tls import peer_spiffe_id
from broker.tokens.issuer import AuthenticatedClient

__all__ = ["DEFAULT_MAX_BODY", "MAX_FIELDS", "authenticate_client", "read_form"]

DEFAULT_MAX_BODY = 64 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def authenticate_client(request: web.Request, bundles: Callable[[], X509BundleSet]) -> AuthenticatedClient:
    """RFC 8705 §2.1 ``tls_client_auth`` with SPIFFE: the peer certificate must be an X.509-SVID of the trust
    domain its SPIFFE ID names (X509-SVID §5), checked against that domain's bundle only."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        raise InvalidClientError("mutual TLS with an X.509-SVID is required")
    try:
        spiffe_id, leaf = peer_spiffe_id(ssl_object, bundles())
    except X509SvidError as exc:
        raise InvalidClientError(f"client certificate is not an acceptable X.509-SVID ({exc.reason})") from None
    return AuthenticatedClient(spiffe_id=spiffe_id, leaf=leaf)


async def read_form(request: web.Request, *, max_body: int = DEFAULT_MAX_BODY) -> dict[str, list[str]]:
    """The request's form parameters (name -> every value, in order); raise ``invalid_request`` otherwise."""
    if request.query_string:
        raise InvalidRequestError("parameters must be sent in the request body, not the URL")
    if request.content_type != FORM_TYPE:
        raise InvalidRequestError(f"Content-Type must be {FORM_TYPE}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise InvalidRequestError("form body must be UTF-8")
    if request.content_length is not None and request.content_length > max_body:
        raise InvalidRequestError(f"request body is larger than {max_body} bytes")
    body = await _read_bounded(request, max_body)
    try:
        text = body.decode("ascii")  # the urlencoded form is ASCII; UTF-8 appears percent-encoded
        return parse_qs(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("request body is not a valid UTF-8 form") from None


async def _read_bounded(request: web.Request, max_body: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(max_body + 1 - size)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body:
            raise InvalidRequestError(f"request body is larger than {max_body} bytes")
        chunks.append(chunk)
