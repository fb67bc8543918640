"""A real HTTPS server on 127.0.0.1 that plays a client's ``jwks_uri``: a throwaway CA, a certificate for
``jwks.test`` (reached through a test resolver), and routes that misbehave in each way the fetch must refuse."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.tokens.clients import RegisteredClient
from tests.unit.tokens.client_registry_fake import LEGACY, ec_jwk

HOST = "jwks.test"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def write_tls_files(directory: Path, host: str = HOST) -> tuple[Path, Path, Path]:
    """A CA (``ca.pem``) and a server certificate for ``host`` and 127.0.0.1 (``server.pem``, ``server.key``)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
    leaf = (
        x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Python 3.13's default context verifies strictly (VERIFY_X509_STRICT): a leaf needs its issuer's key id.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


class Resolver:
    """A DNS of fixed answers that counts its lookups."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = {HOST: ["127.0.0.1"], **(answers or {})}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


def uri_client(uri: str) -> RegisteredClient:
    return RegisteredClient("billing", LEGACY, jwks_uri=uri)


@dataclass
class JwksServer:
    """What the server serves (``jwks``, ``cache_control``) and how often each path was asked (``hits``)."""

    port: int = 0
    ca_file: Path = Path()
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": [ec_jwk("k1")]})
    cache_control: str | None = "max-age=600"
    hits: dict[str, int] = field(default_factory=dict)
    down: bool = False

    def url(self, path: str = "/jwks", host: str = HOST) -> str:
        return f"https://{host}:{self.port}{path}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        return app

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if self.down:
            return web.Response(status=503)
        if name == "slow":
            return await _slow(request)
        headers = {} if self.cache_control is None else {"Cache-Control": self.cache_control}
        answers: dict[str, web.StreamResponse] = {
            "jwks": web.json_response(self.jwks, headers=headers),
            "redirect": web.Response(status=302, headers={"Location": "/jwks"}),
            "big": web.json_response({"keys": [ec_jwk(f"k{n}") for n in range(1000)]}),
            "not-json": web.Response(text="<html>hello</html>", content_type="text/html"),
            "not-a-set": web.json_response([ec_jwk()]),
            "private": web.json_response({"keys": [{**ec_jwk(), "d": "c2VjcmV0LXByaXZhdGUta2V5"}]}),
            "duplicate": web.Response(text='{"keys": [], "keys": []}', content_type="application/json"),
            "missing": web.Response(status=404, text=json.dumps({"error": "secret-looking body"})),
        }
        return answers[name]


async def _slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"keys": [')
    await asyncio.sleep(5)
    await response.write(b"]}")
    return response


async def serve_jwks(directory: Path) -> AsyncIterator[JwksServer]:
    """Run a :class:`JwksServer` over TLS on 127.0.0.1 (an async generator, for a fixture)."""
    ca_file, cert, key = write_tls_files(directory)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = JwksServer(ca_file=ca_file)
    runner = web.AppRunner(server.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()
