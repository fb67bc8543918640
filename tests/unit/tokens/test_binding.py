"""Tests for broker.oauth.binding: the RFC 8705 §3.1 ``x5t#S256`` confirmation written, read and checked."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.identity.svid import X509Svid, certificate_thumbprint
from broker.oauth.binding import CNF_CLAIM, Binding, X5tS256
from broker.tokens.issuer import AuthenticatedClient


def test_certificate_and_der_give_the_one_rfc8705_thumbprint(client_svid: X509Svid) -> None:
    der = client_svid.leaf.public_bytes(serialization.Encoding.DER)
    assert X5tS256.of_certificate(client_svid.leaf) == X5tS256.of_der(der) == X5tS256(certificate_thumbprint(der))
    assert X5tS256.of_der(der).value == client_svid.x5t_s256()


def test_cnf_claim_names_the_x5t_s256_member(client_svid: X509Svid) -> None:
    binding: Binding = X5tS256.of_certificate(client_svid.leaf)
    assert CNF_CLAIM == "cnf"
    assert binding.cnf() == {"x5t#S256": client_svid.x5t_s256()}


def test_client_binding_is_its_certificate_thumbprint(client: AuthenticatedClient, client_svid: X509Svid) -> None:
    assert client.binding() == X5tS256.of_certificate(client_svid.leaf)
    assert client.x5t_s256() == client_svid.x5t_s256()


@pytest.mark.parametrize(
    ("claims", "found"),
    [
        ({"cnf": {"x5t#S256": "abc"}}, "abc"),
        ({"cnf": {"x5t#S256": ""}}, ""),
        ({"cnf": {"x5t#S256": 5}}, 5),
        ({"cnf": {"jkt": "abc"}}, None),
        ({"cnf": "abc"}, None),
        ({}, None),
    ],
    ids=["string", "empty", "not-a-string", "other-member", "cnf-not-an-object", "no-cnf"],
)
def test_bound_in_reads_the_member_as_found(claims: dict[str, Any], found: object) -> None:
    assert X5tS256.bound_in(claims) == found


def test_matches_only_the_same_thumbprint(client_svid: X509Svid) -> None:
    binding = X5tS256.of_certificate(client_svid.leaf)
    assert binding.matches(client_svid.x5t_s256())
    assert not binding.matches("x" * len(binding.value))
    assert not binding.matches("")
