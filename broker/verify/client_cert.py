"""Where a resource server finds the TLS client certificate it must compare with ``cnf.x5t#S256`` (RFC 8705 §3).

The certificate must be the one of the TLS connection the token arrived on. Sources, strongest first:

* the server's own TLS object (aiohttp: ``transport.get_extra_info("ssl_object")``; gunicorn: the socket in
  ``environ["gunicorn.socket"]``);
* what the server copied out of it: the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``,
  PEM strings, the client's certificate first) or the ``SSL_CLIENT_CERT`` WSGI environ key (PEM; Werkzeug's
  server, Apache mod_ssl with ``SSLOptions +ExportCertData``). Neither can be set by a request header;
* a header set by a TLS-terminating proxy, Envoy's ``x-forwarded-client-cert`` (XFCC): trusted only when the
  request comes from a configured proxy address, since any client can send the header itself.

Every function returns the certificate's DER, or None when there is none to be had; the verifier then refuses a
bound token (fail closed). Nothing here logs or echoes a header value.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import logging
import ssl
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar
from urllib.parse import unquote

__all__ = ["ForwardedClientCert", "der_from_pem", "forwarded_certificate_source", "parse_xfcc"]

log = logging.getLogger(__name__)

R = TypeVar("R")  # a framework's request: an ASGI scope, a WSGI environ

_MAX_XFCC = 65536  # a PEM certificate URL-encoded is a few KiB; a chain is not asked for
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


def der_from_pem(pem: object) -> bytes | None:
    """The DER of the first PEM certificate in ``pem``, or None if it is not one."""
    if not isinstance(pem, str) or _PEM_BEGIN not in pem:
        return None
    start = pem.index(_PEM_BEGIN)
    end = pem.find("-----END CERTIFICATE-----", start)
    if end < 0:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(pem[start : end + len("-----END CERTIFICATE-----")]) or None
    except (ValueError, binascii.Error):
        return None


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (XFCC: quoted values may hold ``,``, ``;``, ``=``)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError("unterminated quoted value")
    parts.append("".join(current))
    return parts


def _unquote_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_xfcc(value: str) -> list[dict[str, list[str]]]:
    """Envoy's XFCC: elements separated by ``,``, pairs by ``;``, ``key=value``; keys case-insensitive."""
    if len(value) > _MAX_XFCC:
        raise ValueError("x-forwarded-client-cert is too long")
    elements: list[dict[str, list[str]]] = []
    for element in _split(value, ","):
        pairs: dict[str, list[str]] = {}
        for pair in _split(element, ";"):
            key, sep, raw = pair.strip().partition("=")
            if not sep or not key:
                raise ValueError("x-forwarded-client-cert pair is not key=value")
            pairs.setdefault(key.lower(), []).append(_unquote_value(raw))
        elements.append(pairs)
    return elements


class ForwardedClientCert:
    """The client certificate from an ``x-forwarded-client-cert`` header set by a trusted proxy.

    The proxy must terminate the client's TLS, verify the certificate, and *replace* any XFCC header the client
    sent (Envoy: ``forward_client_cert_details: SANITIZE_SET`` with ``set_current_client_cert_details: {cert:
    true}``). So exactly one header with exactly one element is accepted, and only from a peer address in
    ``trusted_proxies`` (IP addresses or networks; ``"unix"`` trusts a peer on a Unix socket, which has no
    address). Its ``Cert`` value is the URL-encoded PEM; a ``Hash`` (hex SHA-256 of the DER), if present, must
    agree with it.
    """

    def __init__(self, trusted_proxies: Collection[str]) -> None:
        if not trusted_proxies:
            raise ValueError("trusted_proxies must name at least one proxy: XFCC from anyone else is forgeable")
        self._unix = "unix" in trusted_proxies
        self._networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies if p != "unix"]

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address, or None for a Unix socket peer) is a configured proxy."""
        if peer is None:
            return self._unix
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def certificate(self, peer: str | None, headers: Sequence[str]) -> bytes | None:
        """The DER of the forwarded certificate, or None (untrusted peer, no or ambiguous header, bad value)."""
        if headers and not self.trusts(peer):
            log.debug("x-forwarded-client-cert from %s, not in trusted_proxies: ignored", peer or "a Unix socket peer")
            return None
        if len(headers) != 1:
            return None
        try:
            elements = parse_xfcc(headers[0])
        except ValueError:
            return None
        certs = elements[0].get("cert", []) if len(elements) == 1 else []
        if len(certs) != 1:
            return None
        der = der_from_pem(unquote(certs[0]))
        hashes = elements[0].get("hash", [])
        if der is None or len(hashes) > 1:
            return None
        if hashes and not hmac.compare_digest(hashes[0].lower(), hashlib.sha256(der).hexdigest()):
            return None
        return der


def forwarded_certificate_source(
    trusted_proxies: Collection[str], read: Callable[[R], tuple[str | None, list[str]]]
) -> Callable[[R], bytes | None]:
    """A certificate source for a framework: ``read`` gives a request's (peer address, XFCC header values).

    The peer address is the one the framework reports, i.e. after any proxy-header middleware rewrote it
    (uvicorn ``--proxy-headers``, Werkzeug's ``ProxyFix``): ``trusted_proxies`` is compared with that address.
    """
    forwarded = ForwardedClientCert(trusted_proxies)

    def source(request: R) -> bytes | None:
        peer, headers = read(request)
        return forwarded.certificate(peer, headers)

    return source
