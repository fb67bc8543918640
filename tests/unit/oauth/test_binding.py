"""Tests for broker.oauth.binding: the ``cnf`` confirmation methods (RFC 7800 §3.1)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.jose.errors import InvalidJwkError
from broker.jose.jwk import public_jwk
from broker.oauth.binding import Binding, Jkt, X5tS256
from tests.unit.oauth.dpop_helpers import VECTORS


def test_jkt_of_the_rfc9449_example_key_is_the_published_thumbprint() -> None:
    assert Jkt.of_jwk(VECTORS["jwk"]).value == VECTORS["jkt"]  # RFC 9449 §6.1, Figures 8-9


def test_jkt_ignores_members_outside_rfc7638_required_set() -> None:
    assert Jkt.of_jwk({**VECTORS["jwk"], "kid": "k", "use": "sig", "alg": "ES256"}).value == VECTORS["jkt"]


@pytest.mark.parametrize(
    "make_key",
    [lambda: ec.generate_private_key(ec.SECP384R1()), lambda: rsa.generate_private_key(65537, 2048)],
    ids=["EC", "RSA"],
)
def test_jkt_of_a_public_key_equals_jkt_of_its_jwk(make_key: object) -> None:
    key = make_key().public_key()  # type: ignore[operator]
    assert Jkt.of_public_key(key) == Jkt.of_jwk(public_jwk(key))


def test_jkt_writes_and_reads_the_cnf_claim() -> None:
    binding = Jkt(VECTORS["jkt"])
    claims = {"cnf": binding.cnf()}
    assert claims == {"cnf": {"jkt": VECTORS["jkt"]}}
    assert Jkt.bound_in(claims) == VECTORS["jkt"]
    assert X5tS256.bound_in(claims) is None  # one confirmation method does not read as the other
    assert Jkt.bound_in({"cnf": {"x5t#S256": "abc"}}) is None
    assert Jkt.bound_in({"cnf": "jkt"}) is None
    assert Jkt.bound_in({"cnf": {"jkt": 5}}) == 5  # as found: the caller checks the type


def test_jkt_matches_only_its_own_thumbprint() -> None:
    binding = Jkt(VECTORS["jkt"])
    assert binding.matches(VECTORS["jkt"])
    assert not binding.matches(VECTORS["jkt"][:-1] + "J")
    assert not binding.matches("")


def test_jkt_of_a_symmetric_jwk_is_refused() -> None:
    with pytest.raises(InvalidJwkError):
        Jkt.of_jwk({"kty": "oct", "k": "c2VjcmV0"})


def test_both_confirmation_methods_are_bindings() -> None:
    bindings: list[Binding] = [Jkt("a"), X5tS256("b")]
    assert [b.cnf() for b in bindings] == [{"jkt": "a"}, {"x5t#S256": "b"}]
