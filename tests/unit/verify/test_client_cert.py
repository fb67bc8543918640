"""Tests for broker.verify.client_cert: PEM and Envoy XFCC parsing, and trusting XFCC only from proxies."""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse

import pytest

from broker.verify.client_cert import ForwardedClientCert, der_from_pem, parse_xfcc


def _cert(der: bytes) -> str:
    return urllib.parse.quote(ssl.DER_cert_to_PEM_cert(der), safe="")


def test_xfcc_quoted_values_may_hold_separators_and_escaped_quotes() -> None:
    value = 'By=spiffe://td/a;Subject="CN=a,O=\\"b\\";x";URI=spiffe://td/c,By=spiffe://td/d'
    assert parse_xfcc(value) == [
        {"by": ["spiffe://td/a"], "subject": ['CN=a,O="b";x'], "uri": ["spiffe://td/c"]},
        {"by": ["spiffe://td/d"]},
    ]


@pytest.mark.parametrize(
    "value", ['Cert="unterminated', "Cert", "=x", "x" * 70000], ids=["open-quote", "no-equals", "no-key", "too-long"]
)
def test_malformed_xfcc_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_xfcc(value)


def test_forwarded_certificate_with_matching_hash_is_returned(cert_der: bytes) -> None:
    header = f"Hash={hashlib.sha256(cert_der).hexdigest()};Cert={_cert(cert_der)}"
    assert ForwardedClientCert(["127.0.0.1"]).certificate("127.0.0.1", [header]) == cert_der


@pytest.mark.parametrize(
    "header",
    [
        "Hash={other};Cert={cert}",
        "Cert={cert},Cert={cert}",
        "Cert={cert};Cert={cert}",
        "By=spiffe://td/api",
        "Cert=not-a-pem",
        'Cert="{cert}',
    ],
    ids=["hash-disagrees", "two-elements", "two-certs", "no-cert", "not-pem", "malformed"],
)
def test_ambiguous_or_inconsistent_xfcc_gives_no_certificate(header: str, cert_der: bytes) -> None:
    value = header.format(cert=_cert(cert_der), other="00" * 32)
    assert ForwardedClientCert(["127.0.0.1"]).certificate("127.0.0.1", [value]) is None


def test_two_xfcc_headers_give_no_certificate(cert_der: bytes) -> None:
    headers = [f"Cert={_cert(cert_der)}"] * 2
    assert ForwardedClientCert(["127.0.0.1"]).certificate("127.0.0.1", headers) is None


@pytest.mark.parametrize(
    ("trusted", "peer", "expected"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "192.0.2.1", False),
        (["10.0.0.0/8"], None, False),
        (["unix"], None, True),
        (["::1"], "::1", True),
        (["127.0.0.1"], "testclient", False),
    ],
    ids=["in-network", "outside", "unix-peer-not-trusted", "unix-peer-trusted", "ipv6", "not-an-address"],
)
def test_only_configured_proxies_are_trusted(trusted: list[str], peer: str | None, expected: bool) -> None:
    assert ForwardedClientCert(trusted).trusts(peer) is expected


def test_no_trusted_proxy_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        ForwardedClientCert([])


@pytest.mark.parametrize("pem", [None, "", "garbage", "-----BEGIN CERTIFICATE-----\n!!!", 42], ids=repr)
def test_der_from_pem_gives_none_for_anything_but_a_certificate(pem: object) -> None:
    assert der_from_pem(pem) is None
