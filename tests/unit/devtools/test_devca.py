"""The dev CA's leaves: one URI SAN always (X509-SVID §2), plus the DNS and IP SANs a server needs for stock clients."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.identity.x509svid import verify_x509_svid

SERVER_ID = "spiffe://example.org/spiffe-broker"


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_a_plain_leaf_has_only_its_uri_san(ca: DevCA) -> None:
    leaf = ca.issue_x509_svid(SpiffeId.parse(SERVER_ID), ttl=60).leaf

    assert list(_sans(leaf)) == [x509.UniformResourceIdentifier(SERVER_ID)]


def test_server_names_add_dns_and_ip_sans_beside_exactly_one_uri_san(ca: DevCA) -> None:
    serving = ca.with_server_names(dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"])

    sans = _sans(serving.issue_x509_svid(SpiffeId.parse(SERVER_ID), ttl=60).leaf)

    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SERVER_ID]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_a_leaf_with_server_names_is_still_a_valid_x509_svid_of_the_same_bundle(ca: DevCA) -> None:
    serving = ca.with_server_names(dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    svid = serving.issue_x509_svid(SpiffeId.parse(SERVER_ID), ttl=60)

    assert serving.x509_bundle().authorities == ca.x509_bundle().authorities
    assert verify_x509_svid(svid.chain, {ca.trust_domain: ca.x509_bundle()}) == SpiffeId.parse(SERVER_ID)


def test_entry_dns_names_and_server_names_are_not_repeated(ca: DevCA) -> None:
    serving = ca.with_server_names(dns_names=["localhost"])

    leaf = serving.issue_x509_svid(SpiffeId.parse(SERVER_ID), ttl=60, dns_names=["localhost", "api.test"]).leaf

    assert _sans(leaf).get_values_for_type(x509.DNSName) == ["localhost", "api.test"]


def test_server_names_leave_the_original_ca_unchanged(ca: DevCA) -> None:
    ca.with_server_names(dns_names=["localhost"], ip_addresses=["127.0.0.1"])

    leaf = ca.issue_x509_svid(SpiffeId.parse(SERVER_ID), ttl=60).leaf

    assert _sans(leaf).get_values_for_type(x509.DNSName) == []


def test_a_malformed_ip_address_is_refused(ca: DevCA) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ca.with_server_names(ip_addresses=["localhost"])
