"""Reading a token request: the client's X.509-SVID from the connection, and a bounded form body.

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

import re
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from broker.errors import InvalidClientError, InvalidRequestError
from broker.identity.bundle import X509Bundle, X509BundleSet
from broker.identity.errors import X509SvidError
from broker.identity.tls import NoPeerCertificateError, peer_spiffe_id
from broker.tokens.issuer import AuthenticatedClient

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_FIELDS",
    "ClientAuthenticator",
    "authenticate_client",
    "read_form",
    "refuse_authorization_header",
]

DEFAULT_MAX_BODY = 64 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def _ssl_object(request: web.Request) -> ssl.SSLObject | ssl.SSLSocket:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        raise InvalidClientError("mutual TLS with an X.509-SVID is required")
    return ssl_object


_AUTH_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def refuse_authorization_header(request: web.Request) -> None:
    """Only ``tls_client_auth`` is supported (RFC 8705 §2.1; RFC 6749 §2.3: one method per request). A client that
    sends credentials in the Authorization header gets 401 ``invalid_client`` with a challenge in the scheme it
    used (RFC 6749 §5.2), and no token even if its certificate is valid."""
    value = request.headers.get(hdrs.AUTHORIZATION)
    if value is None:
        return
    scheme = value.split(" ", 1)[0]
    error = InvalidClientError("only tls_client_auth (mutual TLS with an X.509-SVID) is supported")
    shown = scheme if _AUTH_SCHEME.fullmatch(scheme) else "Basic"
    error.headers["WWW-Authenticate"] = f'{shown} realm="spiffe-broker"'
    raise error


def authenticate_client(request: web.Request, bundles: Callable[[], X509BundleSet]) -> AuthenticatedClient:
    """RFC 8705 §2.1 ``tls_client_auth`` with SPIFFE: the peer certificate must be an X.509-SVID of the trust
    domain its SPIFFE ID names (X509-SVID §5), checked against that domain's bundle only."""
    return _verify_peer(_ssl_object(request), bundles())


def _verify_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, bundles: X509BundleSet) -> AuthenticatedClient:
    try:
        spiffe_id, leaf = peer_spiffe_id(ssl_object, bundles)
    except X509SvidError as exc:
        if isinstance(exc, NoPeerCertificateError):
            raise InvalidClientError("no client certificate: mutual TLS with an X.509-SVID is required") from None
        raise InvalidClientError(f"client certificate is not an acceptable X.509-SVID ({exc.reason})") from None
    return AuthenticatedClient(spiffe_id=spiffe_id, leaf=leaf)


@dataclass(frozen=True)
class _Verified:
    bundle: X509Bundle | None
    client: AuthenticatedClient
    not_before: float
    not_after: float


def _still_good(hit: _Verified, bundles: X509BundleSet, now: float) -> bool:
    in_validity = hit.not_before <= now <= hit.not_after
    return in_validity and bundles.get(hit.client.spiffe_id.trust_domain) == hit.bundle


class ClientAuthenticator:
    """:func:`authenticate_client`, memoised per TLS connection.

    The peer's certificate cannot change during a TLS connection, so the per-trust-domain chain check (a
    signature verification) runs once per connection, not once per request on keep-alive connections. Every
    request still checks that the leaf is within its validity period and that its trust domain's bundle is still
    the one it was checked against: a bundle update re-checks the connection, fail closed.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._verified: weakref.WeakKeyDictionary[ssl.SSLObject | ssl.SSLSocket, _Verified] = (
            weakref.WeakKeyDictionary()
        )

    def authenticate(self, request: web.Request, bundles: Callable[[], X509BundleSet]) -> AuthenticatedClient:
        ssl_object = _ssl_object(request)
        current = bundles()
        now = self._clock()
        hit = self._verified.get(ssl_object)
        if hit is not None and _still_good(hit, current, now):
            return hit.client
        client = _verify_peer(ssl_object, current)
        leaf = client.leaf
        self._verified[ssl_object] = _Verified(
            bundle=current.get(client.spiffe_id.trust_domain),
            client=client,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
        )
        return client


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
    body = await _read_bounded(request, max_body)
    try:
        text = body.decode("ascii")  # the urlencoded form is ASCII; UTF-8 appears percent-encoded
        return parse_qs(
            text,
            keep_blank_values=True,
            strict_parsing=False,  # RFC 6749 §3.1: a parameter without a value is treated as omitted
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
        try:
            chunk = await request.content.read(max_body + 1 - size)
        except RequestPayloadError:
            raise InvalidRequestError("request body could not be decoded (broken chunked encoding)") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body:
            raise InvalidRequestError(f"request body is larger than {max_body} bytes")
        chunks.append(chunk)
