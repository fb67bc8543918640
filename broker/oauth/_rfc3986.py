"""HTTP(S) URI comparison for the DPoP ``htu`` claim (RFC 9449 §4.3 item 9), by RFC 3986 normalisation.

RFC 9449 §4.3 asks for syntax-based (RFC 3986 §6.2.2) and scheme-based (§6.2.3) normalisation before the
comparison, and ignores the query and the fragment. :func:`normalize_http_uri` returns the normal form:

* the URI is split with the regular expression of RFC 3986 Appendix B, after a character check (§2: unreserved,
  reserved and ``%``; no whitespace or controls) and a length bound;
* the scheme is ``http`` or ``https``, compared case-insensitively (§6.2.2.1), written in lower case;
* the authority is present; userinfo is refused (RFC 9110 §4.2.4: deprecated for ``http(s)``, a sign of phishing);
  the host is written in lower case (§6.2.2.1); an empty or default port (80, 443) is dropped (§6.2.3), another
  port is written without leading zeros;
* percent-encoding (§6.2.2.1, §6.2.2.2): triplets in upper case, an encoded unreserved character decoded;
  a ``%`` not followed by two hex digits makes the URI invalid;
* dot segments are removed (§6.2.2.3, the algorithm of §5.2.4); an empty path becomes ``/`` (§6.2.3);
* the query and the fragment are dropped (RFC 9449 §4.2, §4.3 item 9).

None is returned for anything that is not an absolute ``http(s)`` URI; such an ``htu`` matches nothing.
"""

from __future__ import annotations

import re

__all__ = ["MAX_URI_LENGTH", "normalize_http_uri", "remove_dot_segments"]

MAX_URI_LENGTH = 4096
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")  # RFC 3986 §2.2, §2.3, §2.1
_APPENDIX_B = re.compile(r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?[^#]*)?(?:#.*)?")
_TRIPLET = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.vV]+\]|[^\[\]:]+)(?::([0-9]*))?")


def _normalize_triplet(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _percent_normalized(text: str) -> str | None:
    """§6.2.2.1 and §6.2.2.2, or None when a ``%`` does not start a triplet (§2.1)."""
    if "%" not in text:
        return text
    if text.count("%") != len(_TRIPLET.findall(text)):
        return None
    return _TRIPLET.sub(_normalize_triplet, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, step by step: the ``.`` and ``..`` segments of ``path`` resolved."""
    output: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith("./"):
            path = path[2:]
        elif path.startswith("/./") or path == "/.":
            path = "/" + path[3:]
        elif path.startswith("/../") or path == "/..":
            path = "/" + path[4:]
            if output:
                output.pop()
        elif path in (".", ".."):
            path = ""
        else:
            end = path.find("/", 1)
            end = len(path) if end < 0 else end
            output.append(path[:end])
            path = path[end:]
    return "".join(output)


def _authority(scheme: str, authority: str) -> str | None:
    """Host in lower case, default port dropped (§6.2.2.1, §6.2.3); None for userinfo or a bad host/port."""
    if "@" in authority:
        return None
    match = _HOST_PORT.fullmatch(authority)
    if match is None:
        return None
    host = _percent_normalized(match.group(1))
    port = match.group(2)
    if not host:
        return None
    host = _TRIPLET.sub(lambda m: m.group(0).upper(), host.lower())
    if port:
        number = int(port)
        if number > 65535:
            return None
        port = str(number)
    if not port or port == _DEFAULT_PORTS[scheme]:
        return host
    return f"{host}:{port}"


def normalize_http_uri(uri: str) -> str | None:
    """The RFC 3986 §6.2.2/§6.2.3 normal form of an absolute ``http(s)`` URI, without query and fragment, or None."""
    if len(uri) > MAX_URI_LENGTH or not _URI_CHARACTERS.fullmatch(uri):
        return None
    match = _APPENDIX_B.fullmatch(uri)
    if match is None:  # pragma: no cover - Appendix B matches every string
        return None
    scheme, authority, path = match.group(1), match.group(2), match.group(3)
    scheme = scheme.lower() if scheme else ""
    if scheme not in _DEFAULT_PORTS or authority is None:
        return None
    host = _authority(scheme, authority)
    normalized_path = _percent_normalized(path)
    if host is None or normalized_path is None:
        return None
    return f"{scheme}://{host}{remove_dot_segments(normalized_path) or '/'}"
