"""Reading a token request: the transport's client credentials (the TLS connection, the ``Authorization`` header;
checked by :mod:`broker.tokens.client_auth`), and a bounded form body.

RFC 6749 §3.2: the token endpoint takes POST with ``application/x-www-form-urlencoded`` parameters in the body.
Parameters in the query string are refused (they end up in logs and proxies). The body is read up to
``max_body`` bytes; a larger body is ``invalid_request`` with status 400 (not 413: every refusal of this endpoint
is an RFC 6749 §5.2 error a client already knows how to read). Percent-decoded text must be UTF-8.

A body that cannot be decoded is the client's error, ``invalid_request`` (400): a ``Content-Encoding`` other than
``identity`` (RFC 9110 §8.4; the service does not decompress), or a broken chunked framing (RFC 9112 §7.1, which
aiohttp reports as ``RequestPayloadError``). A client that disconnects mid-body raises ``ConnectionError``, which
is no request to answer (see :mod:`broker.web.errors`).
"""

from __future__ import annotations

import ssl

from aiohttp import hdrs, web

from broker.errors import InvalidRequestError
from broker.oauth.urlencoded import parse_form
from broker.tokens.client_auth import RequestContext
from broker.web.body import read_bounded

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_FIELDS",
    "read_form",
    "request_context",
]

DEFAULT_MAX_BODY = 64 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def request_context(request: web.Request) -> RequestContext:
    """The transport's credentials, for :meth:`broker.tokens.endpoint.TokenEndpoint.authenticate`: the
    ``Authorization`` header and the TLS connection (None if the request did not come over TLS)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        ssl_object = None
    return RequestContext(
        authorization=request.headers.get(hdrs.AUTHORIZATION),
        tls=ssl_object,
        dpop=tuple(request.headers.getall("DPoP", ())),
    )


def _unsupported_encoding() -> InvalidRequestError:
    """400 ``invalid_request`` naming the one coding accepted: ``Accept-Encoding: identity`` (RFC 9110 §12.5.3,
    which a server uses to say which content codings it accepts in a request, cf. §15.5.16)."""
    error = InvalidRequestError("Content-Encoding is not supported: send the form uncompressed")
    error.headers[hdrs.ACCEPT_ENCODING] = "identity"
    return error


async def read_form(request: web.Request, *, max_body: int = DEFAULT_MAX_BODY) -> dict[str, list[str]]:
    """The request's form parameters (name -> every value, in order); raise ``invalid_request`` otherwise."""
    if request.query_string:
        raise InvalidRequestError("parameters must be sent in the request body, not the URL")
    if request.content_type != FORM_TYPE:
        raise InvalidRequestError(f"Content-Type must be {FORM_TYPE}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise InvalidRequestError("form body must be UTF-8")
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        raise _unsupported_encoding()
    if request.content_length is not None and request.content_length > max_body:
        raise InvalidRequestError(f"request body is larger than {max_body} bytes")
    body = await read_bounded(request, max_body)
    try:
        text = body.decode("ascii")  # the urlencoded form is ASCII; UTF-8 appears percent-encoded
        return parse_form(text, max_fields=MAX_FIELDS)  # what parse_qs(keep_blank_values, errors=strict) gives
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("request body is not a valid UTF-8 form") from None
