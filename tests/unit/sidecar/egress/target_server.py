"""An external API for egress tests: a real HTTPS server on 127.0.0.1 under a throwaway (non-SPIFFE) CA.

Its certificate names ``api.example.test``, ``other.example.test`` and ``localhost``; :class:`LocalResolver` sends
every ``*.example.test`` name to 127.0.0.1, as DNS would send them to the API. A second CA, which the proxy does
not trust, issues the certificate of the "impostor" server. Routes:

* ``/echo/...``: JSON of what arrived (method, path with query, headers), and an ``X-Echo-Authorization`` header
  repeating the request's ``Authorization``: a target that echoes the key back;
* ``/duplex``: streams the request body back as it arrives (``Content-Length`` of the request in
  ``X-Received``): 100 MB in and out without either side holding it;
* ``/reflect``: 401 with the request's ``Authorization`` in the reason phrase, percent-encoded with lower-case hex in
  ``Location``, JSON-escaped (``/`` as ``\\/``) in ``X-Json`` and HTML-escaped in the body;
* ``/gzip``: a gzip-encoded body that contains the request's ``Authorization``, whatever the request accepts.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTS = ("api.example.test", "other.example.test", "localhost")


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host) for host in HOSTS]
    names.append(x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder().subject_name(_name(HOSTS[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


@dataclass(frozen=True)
class TargetTls:
    ca_file: Path  # what the proxy trusts ([egress] ca_file)
    trusted: ssl.SSLContext  # a server context with a certificate from that CA
    impostor: ssl.SSLContext  # a server context with a certificate from a CA the proxy does not trust


def _server_context(
    directory: Path, label: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> ssl.SSLContext:
    cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


def target_tls(directory: Path) -> TargetTls:
    ca_key, ca = _ca("egress test CA")
    rogue_key, rogue = _ca("impostor CA")
    ca_file = directory / "targets-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    trusted = _server_context(directory, "target", *_leaf(ca_key, ca))
    impostor = _server_context(directory, "impostor", *_leaf(rogue_key, rogue))
    return TargetTls(ca_file, trusted, impostor)


class LocalResolver(AbstractResolver):
    """DNS for the tests: every name resolves to 127.0.0.1; the names asked for are kept."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]  # fmt: skip

    async def close(self) -> None:
        return None


@dataclass
class Received:
    method: str
    path_qs: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> list[str]:
        return [value for key, values in self.headers.items() if key.lower() == name.lower() for value in values]


@dataclass
class TargetServer:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    duplex_bytes: int = 0

    def record(self, request: web.Request) -> Received:
        headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            headers.setdefault(key, []).append(value)
        item = Received(request.method, request.path_qs, headers)
        self.received.append(item)
        return item

    async def echo(self, request: web.Request) -> web.Response:
        item = self.record(request)
        body: dict[str, Any] = {"method": item.method, "path_qs": item.path_qs, "headers": item.headers}
        echo = {"X-Echo-Authorization": request.headers.get("Authorization", "")}
        return web.json_response(body, headers=echo)

    async def duplex(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        response = web.StreamResponse(headers={"X-Received": str(request.content_length)})
        await response.prepare(request)
        async for chunk in request.content.iter_any():
            self.duplex_bytes += len(chunk)
            await response.write(chunk)
        await response.write_eof()
        return response

    async def reflect(self, request: web.Request) -> web.Response:
        self.record(request)
        auth = request.headers.get("Authorization", "")
        encoded = re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(auth, safe=""))
        headers = {"Location": f"https://example.test/?k={encoded}", "X-Json": json.dumps(auth).replace("/", "\\/")}
        return web.Response(status=401, reason=auth, text=f"<p>{html.escape(auth)}</p>", headers=headers)

    async def gzipped(self, request: web.Request) -> web.Response:
        self.record(request)
        body = gzip.compress(request.headers.get("Authorization", "").encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


@contextlib.asynccontextmanager
async def target_server(context: ssl.SSLContext) -> AsyncIterator[TargetServer]:
    server = TargetServer()
    app = web.Application(client_max_size=1024)
    app.router.add_route("*", "/duplex", server.duplex)
    app.router.add_route("*", "/gzip", server.gzipped)
    app.router.add_route("*", "/reflect", server.reflect)
    app.router.add_route("*", "/{tail:.*}", server.echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server.port = int(runner.addresses[0][1])
    try:
        yield server
    finally:
        await runner.cleanup()
