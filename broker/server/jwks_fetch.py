"""One guarded fetch of a registered client's ``jwks_uri`` (RFC 7591 §2): a request the server makes on behalf of a
registration, so it must not become a way to reach what only the server can reach (server-side request forgery).

The checks, in the order :meth:`GuardedJwksFetch.fetch` runs them, all within one time limit (``timeout``):

1. the URI is ``https`` with a host, no credentials, no fragment (RFC 7591 §2: the keys must come over TLS);
2. the host is resolved once, and **every** address it resolves to must be publicly routable: no loopback,
   private (RFC 1918), shared (RFC 6598), link-local (RFC 3927: 169.254.169.254, the cloud metadata service),
   unique-local (RFC 4193), multicast, unspecified or reserved address, nor an IPv6 address that embeds one
   (IPv4-mapped, 6to4, NAT64 ``64:ff9b::/96``), unless it is inside one of ``allowed_networks``;
3. the connection goes to those vetted addresses only (the connector's resolver is pinned to them), so a DNS
   answer that changes between the check and the connection (DNS rebinding) cannot redirect it, while TLS still
   verifies the certificate for the URI's host name (the system trust store, plus ``ca_file``); no proxy from
   the environment is used;
4. the answer must be ``200``: a redirect (3xx) is not followed, it is an error like any other status;
5. the body (``Content-Encoding`` refused: only ``identity`` is asked for) is read up to ``max_bytes``, counted
   while reading, so a larger one is cut off without being buffered;
6. it must be strict JSON (UTF-8, no repeated member, no ``NaN``), a JWK Set (RFC 7517 §5) of public keys only:
   the rule an inline ``jwks`` obeys (:func:`~broker.tokens.clients.check_client`).

Failures are typed so the token endpoint can answer each correctly, and never carry the response body::

    ClientKeysError                   (base)
    ├── ClientKeysRefusedError        invalid_client (401): the URI or its answer cannot be used as the client's
    │                                 keys: not https, a refused address, a redirect or 4xx, too large, not a
    │                                 JWK Set of public keys. Retrying will not help; the registration must change.
    └── ClientKeysUnavailableError    temporarily_unavailable (503): not reached (DNS, connection, TLS, time
                                      limit, 5xx or 429). Retry later.

Each error's ``description`` (what a client is told) is generic; its ``detail`` (the log) names the host, the
address or the status.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from broker.errors import BrokerError, InvalidClientError, TemporarilyUnavailableError
from broker.tokens.clients import RegisteredClient, check_client

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "ClientKeysError",
    "ClientKeysRefusedError",
    "ClientKeysUnavailableError",
    "FetchedKeys",
    "GuardedJwksFetch",
    "Resolve",
    "refused_kind",
    "system_resolve",
]

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_TIMEOUT = 5.0
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> IP addresses
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")  # RFC 4193


class ClientKeysError(BrokerError):
    """A registered client's keys could not be had from its ``jwks_uri``; ``detail`` says why (for the log)."""

    def __init__(self, description: str, detail: str) -> None:
        super().__init__(description)
        self.detail = detail


class ClientKeysRefusedError(ClientKeysError, InvalidClientError):
    """The ``jwks_uri`` or its answer cannot serve as the client's keys: ``invalid_client``."""

    error = "invalid_client"
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__("the client's registered keys (jwks_uri) cannot be used", detail)  # + InvalidClientError's


class ClientKeysUnavailableError(ClientKeysError, TemporarilyUnavailableError):
    """The ``jwks_uri`` could not be reached now: ``temporarily_unavailable``."""

    error = "temporarily_unavailable"
    status = 503

    def __init__(self, detail: str) -> None:
        super().__init__("the client's registered keys (jwks_uri) could not be fetched; retry later", detail)


@dataclass(frozen=True, slots=True)
class FetchedKeys:
    """A JWK Set's keys, as fetched, and the response's ``Cache-Control`` (None when absent)."""

    keys: tuple[dict[str, Any], ...]
    cache_control: str | None


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (``getaddrinfo``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refused_kind(address: Address) -> str | None:
    """Why ``address`` is not publicly routable (``"loopback"``, ``"link-local"``, ...), or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and (kind := refused_kind(embedded)) is not None:
            return f"{kind} (embedded in IPv6)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unique-local", isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL),
        ("shared (RFC 6598)", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for kind, found in checks:
        if found:
            return kind
    return None if address.is_global else "not globally routable"


class _PinnedResolver(AbstractResolver):
    """Answers for the one vetted host with the vetted addresses, and for nothing else."""

    def __init__(self, host: str, addresses: list[Address]) -> None:
        self._host, self._addresses = host, addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"{host} was not vetted")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                proto=0,
                flags=socket.AI_NUMERICHOST,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
            )
            for address in self._addresses
        ]

    async def close(self) -> None:
        return None


class GuardedJwksFetch:
    """Fetches a ``jwks_uri`` under the checks of the module docstring; one connection per fetch, nothing kept."""

    def __init__(
        self,
        *,
        allowed_networks: Iterable[str] = (),
        ca_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        resolve: Resolve = system_resolve,
    ) -> None:
        self._allowed: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self._tls = ssl.create_default_context()
        if ca_file is not None:
            self._tls.load_verify_locations(cafile=ca_file)
        self.timeout, self.max_bytes = timeout, max_bytes
        self._resolve = resolve

    async def fetch(self, client: RegisteredClient) -> FetchedKeys:
        """The keys behind ``client.jwks_uri``: :class:`ClientKeysRefusedError`, :class:`ClientKeysUnavailableError`."""
        try:
            url = URL(client.jwks_uri or "")
        except ValueError:
            url = URL()
        host = url.raw_host  # lowercase, IDNA-encoded: the name aiohttp resolves and TLS verifies
        if url.scheme != "https" or not host or url.user is not None or url.password is not None or url.fragment:
            raise ClientKeysRefusedError(f"client {client.client_id}: jwks_uri is not an https URL without credentials")
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await self._vetted(host, url.port or 443)
                body, cache_control = await self._get(url, host, addresses)
        except TimeoutError:
            raise ClientKeysUnavailableError(
                f"jwks_uri host {host}: no complete answer within {self.timeout:g} s"
            ) from None
        return FetchedKeys(_public_jwk_set(body, client, host), cache_control)

    async def _vetted(self, host: str, port: int) -> list[Address]:
        try:
            found = [ipaddress.ip_address(text) for text in await self._resolve(host, port)]
        except (OSError, ValueError, UnicodeError) as exc:
            raise ClientKeysUnavailableError(f"jwks_uri host {host} does not resolve ({type(exc).__name__})") from None
        if not found:
            raise ClientKeysUnavailableError(f"jwks_uri host {host} resolves to no address")
        for address in found:
            kind = None if any(address in network for network in self._allowed) else refused_kind(address)
            if kind is not None:
                raise ClientKeysRefusedError(
                    f"jwks_uri host {host} resolves to {address}, a {kind} address: refused (server-side request "
                    "guard; allow it with allowed_networks only if that is intended)"
                )
        return found

    async def _get(self, uri: URL, host: str, addresses: list[Address]) -> tuple[bytes, str | None]:
        connector = aiohttp.TCPConnector(resolver=_PinnedResolver(host, addresses), ssl=self._tls,
                                         use_dns_cache=False, force_close=True)  # fmt: skip
        headers = {"Accept": "application/jwk-set+json, application/json", "Accept-Encoding": "identity"}
        limits = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=limits, trust_env=False, auto_decompress=False) as s,
                s.get(uri, headers=headers, allow_redirects=False) as response,
            ):
                _check_status(response.status, host)
                if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                    raise ClientKeysRefusedError(f"jwks_uri host {host} answered with a Content-Encoding")
                return await _bounded(response, self.max_bytes, host), response.headers.get("Cache-Control")
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise ClientKeysUnavailableError(f"jwks_uri host {host} not reached: {type(exc).__name__}") from None


def _check_status(status: int, host: str) -> None:
    if status == 200:
        return
    if 300 <= status < 400:
        raise ClientKeysRefusedError(f"jwks_uri host {host} answered {status}, a redirect: not followed")
    if status >= 500 or status == 429:
        raise ClientKeysUnavailableError(f"jwks_uri host {host} answered {status}")
    raise ClientKeysRefusedError(f"jwks_uri host {host} answered {status}")


async def _bounded(response: aiohttp.ClientResponse, limit: int, host: str) -> bytes:
    too_large = ClientKeysRefusedError(f"jwks_uri host {host} answered with more than {limit} bytes")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("a member appears more than once")
    return members


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _public_jwk_set(body: bytes, client: RegisteredClient, host: str) -> tuple[dict[str, Any], ...]:
    """The keys of a strict-JSON JWK Set of public keys (RFC 7517 §5), held to the inline ``jwks`` rule."""
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ClientKeysRefusedError(f"jwks_uri host {host} answered with something that is not JSON") from None
    try:
        check_client(replace(client, jwks=document, jwks_uri=None))
    except ValueError as exc:  # its words never quote key material
        raise ClientKeysRefusedError(f"jwks_uri host {host}: not a usable JWK Set ({exc})") from None
    return tuple(document["keys"])
