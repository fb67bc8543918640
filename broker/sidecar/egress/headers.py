"""The header fields a proxy forwards: everything but connection-specific ones (RFC 9110 §7.6.1, RFC 9112 §7).

Removed in both directions: ``Connection`` and every field it names, ``Keep-Alive``, ``Proxy-Connection``,
``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, and the proxy's own ``Proxy-Authorization`` /
``Proxy-Authenticate``. Requests also lose ``Host`` (set from the target, RFC 9112 §3.2.2 and §7.2), ``Expect``
(the listener has already answered ``100-continue``), and the fields some servers and frameworks read as another
path or method than the one checked (``X-Original-URL``, ``X-Rewrite-URL``, ``X-HTTP-Method-Override``,
``X-HTTP-Method``, ``X-Method-Override``); the length of a body is set again by the side that
writes it (``Content-Length`` passes through when the sender gave one, else the body is chunked). Both directions
get a ``Via`` entry naming the HTTP version of the message received (RFC 9110 §7.6.3: ``1.0`` or ``1.1``).

The request to the target asks for ``Accept-Encoding: identity`` whatever the app asked for (RFC 9110 §12.5.3):
the response body must arrive uncompressed for the secret to be masked in it (:mod:`.inject`).
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["VIA", "ask_for_identity", "forwarded_request_headers", "forwarded_response_headers", "via"]

VIA = "1.1 spiffe-broker-sidecar"
_PSEUDONYM = "spiffe-broker-sidecar"
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
     "proxy-authorization", "proxy-authenticate"}
)  # fmt: skip
_REQUEST_ONLY = frozenset(
    {"host", "expect", "x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method",
     "x-method-override"}
)  # fmt: skip


def _connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """The fields ``Connection`` names as hop-by-hop (RFC 9110 §7.6.1)."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _kept(headers: CIMultiDictProxy[str] | CIMultiDict[str], drop: Iterable[str]) -> CIMultiDict[str]:
    dropped = _HOP_BY_HOP | _connection_named(headers) | set(drop)
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in dropped)


def via(version: tuple[int, int] | None) -> str:
    """The ``Via`` entry for a message received in HTTP ``version`` (``(1, 1)`` if not known)."""
    major, minor = version if version is not None else (1, 1)
    return f"{major}.{minor} {_PSEUDONYM}"


def forwarded_request_headers(headers: CIMultiDictProxy[str], via_entry: str = VIA) -> CIMultiDict[str]:
    """The app's request headers to send on to the target (before injection); ``via_entry``: :func:`via`."""
    kept = _kept(headers, _REQUEST_ONLY)
    kept.add("Via", via_entry)
    return kept


def ask_for_identity(headers: CIMultiDict[str]) -> None:
    """Replace the app's ``Accept-Encoding`` with ``identity``: an uncompressed body, which can be masked."""
    headers.popall("Accept-Encoding", None)
    headers["Accept-Encoding"] = "identity"


def forwarded_response_headers(headers: CIMultiDictProxy[str], via_entry: str = VIA) -> CIMultiDict[str]:
    """The target's response headers to hand to the app (before masking); ``via_entry``: :func:`via`."""
    kept = _kept(headers, ("content-length",))
    kept.add("Via", via_entry)
    return kept
