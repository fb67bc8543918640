"""Where an app's request goes: the two ways into the egress proxy, read from the raw request target.

* **Forward proxy** (``HTTP_PROXY``): an absolute-form target, ``GET http://api.example.com/v1/x HTTP/1.1``
  (RFC 9112 §3.2.2). The sidecar connects with TLS to ``api.example.com`` although the app spoke ``http``: targets
  are https-only, and the app's connection to the sidecar stays on the host. The port is the URL's, except that
  ``http``'s default (none, or 80) means 443.
* **Local route**: an origin-form target ``/{name}/rest/of/path?query`` goes to the target of the exception
  ``name``: ``https://<its host>:<its port>/rest/of/path?query`` (the path is the full path at the target, so it
  must lie under the exception's ``path_prefix``).

The path goes to the target byte for byte as the app sent it, so what :meth:`~broker.apikeys.model.Target.matches`
checks is what the target sees. A path that a server could read as another path is refused (400): dot-segments
(``/v1/../admin`` would pass a ``/v1/`` prefix check and reach ``/admin``), with matrix parameters too
(``/v1/..;x/admin``, which some servers read as ``..``), as sent or after any round of percent-decoding;
percent-encoded dots, slashes, backslashes or percent signs (``%25``: double encoding); and backslashes. User
information in the URL and fragments are refused too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from broker.apikeys.model import Target
from broker.sidecar.egress.errors import EgressRequestError, TargetNotCoveredError

__all__ = ["Destination", "forward_destination", "route_destination", "route_name"]

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c|2e|25)", re.IGNORECASE)
_DOT_SEGMENT = re.compile(r"\.\.?(;.*)?")  # . or .. with or without matrix parameters (Tomcat reads ..;x as ..)
_DECODE_ROUNDS = 3
_HTTPS_PORT = 443


@dataclass(frozen=True, slots=True)
class Destination:
    """A request's destination at the target: ``https://host:port`` + the raw ``path`` and ``query``.

    ``route`` is the exception a local route named (None for a forward-proxy request).
    """

    host: str
    port: int
    path: str
    query: str
    route: str | None = None

    @property
    def origin(self) -> str:
        return f"https://{self.host}:{self.port}"

    def where(self) -> str:
        """What a report or an error may say of the destination: origin and path, never the query."""
        return (self.origin + self.path)[:2048]

    def url(self, query: str | None = None) -> str:
        """The encoded URL to request (``query`` replaces the app's, after injection)."""
        query = self.query if query is None else query
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{self.path}" + (f"?{query}" if query else "")


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise EgressRequestError("the request path must start with /")
    for text in _decodings(path):
        if "\\" in text or _ENCODED_SEPARATOR.search(text):
            raise EgressRequestError(
                "the request path must hold no backslash and no percent-encoded dot, slash, backslash or percent "
                "sign (double encoding)"
            )
        if any(_DOT_SEGMENT.fullmatch(segment) for segment in text.split("/")):
            raise EgressRequestError("the request path must not hold dot-segments (/./ or /../, /..;x/ included)")
    return path


def _decodings(path: str) -> Iterator[str]:
    """``path`` as sent, then percent-decoded again and again while that changes it (a bounded number of times)."""
    yield path
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            return
        yield decoded
        path = decoded


def _split(target: str) -> tuple[str, str]:
    if "#" in target:
        raise EgressRequestError("a request target has no fragment (#)")
    path, _, query = target.partition("?")
    return path, query


def forward_destination(target: str) -> Destination:
    """The destination of an absolute-form request target (RFC 9112 §3.2.2): ``http(s)://host[:port]/path?q``."""
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        raise EgressRequestError("the absolute-form request target is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise EgressRequestError("a forward-proxy request target is http://host/path (the sidecar adds TLS)")
    if parts.username is not None or parts.password is not None:
        raise EgressRequestError("a request target must not carry user information (user:password@)")
    if port is None or (parts.scheme.lower() == "http" and port == 80):
        port = _HTTPS_PORT
    _, _, rest = target.partition("://")
    slash = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    path, query = _split(rest[slash:])
    path = _check_path(path if path.startswith("/") else "/" + path)
    return Destination(parts.hostname.lower().rstrip("."), port, path, query)


def route_name(target: str) -> str | None:
    """The exception name a local route ``/{name}/...`` starts with, if it is one (a DNS label)."""
    name = target[1:].partition("?")[0].partition("/")[0]
    return name if _NAME.fullmatch(name) else None


def route_destination(target: str, exception: Target | None) -> Destination:
    """The destination of a local route ``/{name}/rest?query`` to ``exception`` (None: no usable one of that name)."""
    path, query = _split(target)
    name, slash, rest = path[1:].partition("/")
    if exception is None:
        raise TargetNotCoveredError(
            f"no usable API-key exception is named {name[:63]!r}: a local route is /<exception name>/<path at the "
            "target>", name=route_name(target)
        )  # fmt: skip
    if exception.wildcard_host:
        raise EgressRequestError(
            f"exception {name} covers a wildcard host: reach it through the forward proxy (HTTP_PROXY)", name=name
        )
    return Destination(exception.host, exception.port, _check_path(slash + rest if slash else "/"), query, route=name)
