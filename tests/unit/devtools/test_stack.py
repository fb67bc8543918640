"""The dev stack's servers are reachable by a stock HTTPS client that has only the bundle (issue 7, item 9).

The client is Python's default context (certificate and host name checked, ``check_hostname`` on) with the dev
stack's ``bundle.pem`` as its only CA file: what ``curl --cacert bundle.pem`` does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from broker.config import load_settings
from broker.devtools.stack import DevStack, run_dev_stack, server_names

DISCOVERY = "/.well-known/oauth-authorization-server"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    overrides = {"state_dir": tmp_path, "server": {"port": 0}, "demo_api": {"port": 0}}
    async with run_dev_stack(load_settings(None, overrides)) as running:
        yield running


def _stock_get(url: str, cafile: Path) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return int(response.status), bytes(response.read())


def _handshake(host: str, port: int, server_hostname: str, cafile: Path) -> None:
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname),
    ):
        pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_stock_https_client_with_the_bundle_reads_the_token_service_metadata(
    stack: DevStack, host: str
) -> None:
    port = urlsplit(stack.issuer).port
    url = f"https://{host}:{port}{DISCOVERY}"

    status, body = await asyncio.to_thread(_stock_get, url, stack.bundle_file)

    assert status == 200
    assert json.loads(body)["issuer"] == stack.issuer


async def test_a_stock_https_client_with_the_bundle_reaches_the_demo_api_by_ip(stack: DevStack) -> None:
    port = urlsplit(stack.demo_api_url).port
    assert port is not None

    await asyncio.to_thread(_handshake, "127.0.0.1", port, "127.0.0.1", stack.bundle_file)


async def test_the_stock_client_still_refuses_a_name_the_svid_does_not_carry(stack: DevStack) -> None:
    port = urlsplit(stack.issuer).port
    assert port is not None

    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
        await asyncio.to_thread(_handshake, "127.0.0.1", port, "not-a-san.example", stack.bundle_file)


async def test_the_bundle_file_holds_the_trust_domain_roots_only(stack: DevStack) -> None:
    pem = stack.bundle_file.read_text()

    assert pem.count("BEGIN CERTIFICATE") == 1
    assert "PRIVATE KEY" not in pem


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", (["localhost"], ["127.0.0.1"])),
        ("0.0.0.0", (["localhost"], ["127.0.0.1"])),
        ("::", (["localhost"], ["127.0.0.1"])),
        ("::1", (["localhost"], ["127.0.0.1", "::1"])),
        ("broker.internal", (["localhost", "broker.internal"], ["127.0.0.1"])),
    ],
    ids=["loopback", "ipv4-wildcard", "ipv6-wildcard", "ipv6-loopback", "dns-name"],
)
def test_server_names_cover_loopback_and_the_listen_host(host: str, expected: tuple[list[str], list[str]]) -> None:
    assert server_names(host) == expected
