"""The guarded ``jwks_uri`` fetch against a real HTTPS server on 127.0.0.1 (reached as ``jwks.test`` through a test
resolver, allowed by ``allowed_networks``): every refusal the server-side request guard owes, typed."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.server.jwks_fetch import (
    ClientKeysRefusedError,
    ClientKeysUnavailableError,
    GuardedJwksFetch,
    refused_kind,
)
from tests.unit.server.jwks_server import HOST, JwksServer, Resolver, serve_jwks, uri_client

LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[JwksServer]:
    async for running in serve_jwks(tmp_path):
        yield running


def guard(server: JwksServer, resolver: Resolver | None = None, **options: object) -> GuardedJwksFetch:
    settings: dict[str, object] = {"allowed_networks": LOOPBACK, "ca_file": str(server.ca_file), **options}
    return GuardedJwksFetch(resolve=resolver or Resolver(), **settings)  # type: ignore[arg-type]


async def test_a_jwk_set_of_public_keys_is_fetched_with_its_cache_control(server: JwksServer) -> None:
    fetched = await guard(server).fetch(uri_client(server.url()))
    assert fetched.keys == tuple(server.jwks["keys"]) and fetched.cache_control == "max-age=600"


async def test_the_connection_goes_to_the_vetted_address_and_dns_is_asked_once(server: JwksServer) -> None:
    """DNS rebinding: the second answer would be the metadata service, but there is no second lookup."""
    resolver = Resolver()
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[str]:
        resolver.asked.append(host)
        return next(answers)

    fetched = await guard(server, rebinding).fetch(uri_client(server.url()))  # type: ignore[arg-type]
    assert fetched.keys and resolver.asked == [HOST]


async def test_tls_is_verified_for_the_uri_host_not_the_address(server: JwksServer) -> None:
    resolver = Resolver({"other.test": ["127.0.0.1"]})
    with pytest.raises(ClientKeysUnavailableError) as caught:
        await guard(server, resolver).fetch(uri_client(server.url(host="other.test")))
    assert "not reached" in caught.value.detail


async def test_without_the_test_ca_the_certificate_is_not_trusted(server: JwksServer) -> None:
    with pytest.raises(ClientKeysUnavailableError, match="retry later"):
        await guard(server, ca_file=None).fetch(uri_client(server.url()))


async def test_http_is_refused_before_any_lookup(server: JwksServer) -> None:
    resolver = Resolver()
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server, resolver).fetch(uri_client(f"http://{HOST}:{server.port}/jwks"))
    assert "not an https URL" in caught.value.detail and resolver.asked == [] and server.hits == {}


async def test_loopback_is_refused_without_the_allow_list(server: JwksServer) -> None:
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server, allowed_networks=()).fetch(uri_client(server.url()))
    assert "resolves to 127.0.0.1, a loopback address: refused" in caught.value.detail
    assert server.hits == {}


REFUSED = [
    ("metadata.test", ["169.254.169.254"], "169.254.169.254, a link-local address"),
    ("private.test", ["10.1.2.3"], "10.1.2.3, a private address"),
    ("rfc1918-192.test", ["192.168.0.10"], "a private address"),
    ("mixed.test", ["93.184.216.34", "172.16.0.1"], "172.16.0.1, a private address"),
    ("ula.test", ["fd12:3456::1"], "a unique-local address"),
    ("mapped.test", ["::ffff:169.254.169.254"], "a link-local (embedded in IPv6) address"),
    ("zero.test", ["0.0.0.0"], "an unspecified address".replace("an ", "")),
]


@pytest.mark.parametrize(("host", "addresses", "says"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_an_address_that_is_not_public_is_refused_before_connecting(
    server: JwksServer, host: str, addresses: list[str], says: str
) -> None:
    fetch = guard(server, Resolver({host: addresses}))
    with pytest.raises(ClientKeysRefusedError) as caught:
        await fetch.fetch(uri_client(f"https://{host}/jwks"))
    assert says in caught.value.detail
    assert caught.value.error == "invalid_client" and caught.value.status == 401


async def test_a_literal_metadata_address_is_refused(server: JwksServer) -> None:
    async def system_like(host: str, port: int) -> list[str]:
        return [host]  # getaddrinfo answers a literal with itself

    with pytest.raises(ClientKeysRefusedError, match="cannot be used") as caught:
        await guard(server, system_like).fetch(uri_client("https://169.254.169.254/latest/meta-data/"))  # type: ignore[arg-type]
    assert "link-local" in caught.value.detail


@pytest.mark.parametrize(
    ("address", "kind"),
    [("8.8.8.8", None), ("2606:4700:4700::1111", None), ("127.0.0.2", "loopback"), ("::1", "loopback"),
     ("100.64.0.1", "shared (RFC 6598)"), ("224.0.1.1", "multicast"), ("ff02::1", "multicast"),
     ("240.0.0.1", "reserved"), ("fe80::1", "link-local"), ("2002:a00:1::", "private (embedded in IPv6)"),
     ("64:ff9b::a9fe:a9fe", "link-local (embedded in IPv6)"), ("192.0.2.1", "private")],
)  # fmt: skip
def test_refused_kinds(address: str, kind: str | None) -> None:
    assert refused_kind(ipaddress.ip_address(address)) == kind


async def test_an_unresolvable_host_is_unavailable(server: JwksServer) -> None:
    with pytest.raises(ClientKeysUnavailableError) as caught:
        await guard(server).fetch(uri_client("https://nowhere.test/jwks"))
    assert "does not resolve" in caught.value.detail and caught.value.status == 503


async def test_a_redirect_is_not_followed(server: JwksServer) -> None:
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server).fetch(uri_client(server.url("/redirect")))
    assert "answered 302, a redirect: not followed" in caught.value.detail
    assert server.hits == {"redirect": 1}


async def test_an_oversize_body_is_cut_off(server: JwksServer) -> None:
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server).fetch(uri_client(server.url("/big")))
    assert "more than 65536 bytes" in caught.value.detail


async def test_a_slow_body_hits_the_time_limit(server: JwksServer) -> None:
    with pytest.raises(ClientKeysUnavailableError) as caught:
        await guard(server, timeout=0.5).fetch(uri_client(server.url("/slow")))
    assert "no complete answer within 0.5 s" in caught.value.detail


NOT_A_SET = [
    ("not-json", "not JSON"),
    ("duplicate", "not JSON"),
    ("not-a-set", "at least one key"),
    ("private", "public keys only"),
    ("missing", "answered 404"),
]


@pytest.mark.parametrize(("path", "says"), NOT_A_SET, ids=[n[0] for n in NOT_A_SET])
async def test_an_answer_that_is_not_a_public_jwk_set_is_refused_and_never_quoted(
    server: JwksServer, path: str, says: str
) -> None:
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server).fetch(uri_client(server.url(f"/{path}")))
    error = caught.value
    assert says in error.detail
    for text in (error.detail, error.description, str(error), repr(error)):
        assert "hello" not in text and "c2VjcmV0" not in text and "secret-looking" not in text


async def test_a_server_error_is_unavailable(server: JwksServer) -> None:
    server.down = True
    with pytest.raises(ClientKeysUnavailableError) as caught:
        await guard(server).fetch(uri_client(server.url()))
    assert "answered 503" in caught.value.detail


async def test_credentials_in_the_uri_are_refused_and_not_repeated(server: JwksServer) -> None:
    with pytest.raises(ClientKeysRefusedError) as caught:
        await guard(server).fetch(uri_client(f"https://user:hunter2@{HOST}:{server.port}/jwks"))
    assert "without credentials" in caught.value.detail and "hunter2" not in caught.value.detail
    assert server.hits == {}


async def test_an_international_host_is_resolved_and_vetted_by_its_idna_name(server: JwksServer) -> None:
    resolver = Resolver({"xn--bcher-kva.example": ["10.0.0.1"]})
    with pytest.raises(ClientKeysRefusedError, match="cannot be used"):
        await guard(server, resolver).fetch(uri_client("https://Bücher.example/jwks"))
    assert resolver.asked == ["xn--bcher-kva.example"]
