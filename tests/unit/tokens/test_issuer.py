"""Tests for broker.tokens.issuer: RFC 9068 access tokens bound to the client certificate (RFC 8705 §3)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from broker.devtools.devca import DevCA
from broker.errors import InvalidClientError
from broker.identity.spiffeid import SpiffeId
from broker.jose.jws import parse_compact, verify
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient, new_jti
from broker.tokens.keys import InMemoryKeyStore, KeyStore, SigningKey

ISSUER = "https://broker.example.org:8443"
NOW = int(time.time()) + 0.7  # a fractional second: iat is truncated
Decoder = Callable[[str, KeyStore], tuple[dict[str, Any], dict[str, Any]]]


def test_issue_builds_rfc9068_token_with_certificate_binding(client: AuthenticatedClient, decode: Decoder) -> None:
    store = InMemoryKeyStore()
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=store, clock=lambda: NOW)
    issued = issuer.issue(client=client, audience="https://api", scopes=frozenset({"b", "a"}), max_lifetime=300)
    header, claims = decode(issued.token, store)
    assert header == {"alg": "ES256", "kid": store.active_key().kid, "typ": "at+jwt"}
    assert client.leaf is not None
    digest = hashlib.sha256(client.leaf.public_bytes(serialization.Encoding.DER)).digest()
    assert claims == {
        "iss": ISSUER,
        "sub": str(client.spiffe_id),
        "client_id": str(client.spiffe_id),
        "aud": "https://api",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": issued.jti,
        "scope": "a b",
        "cnf": {"x5t#S256": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()},
    }
    assert issued.expires_in == 300 and issued.scopes == ("a", "b")
    assert issuer.issued_count == 1


def test_issue_omits_scope_claim_without_scopes(client: AuthenticatedClient, decode: Decoder) -> None:
    store = InMemoryKeyStore()
    issued = AccessTokenIssuer(issuer=ISSUER, key_store=store).issue(
        client=client, audience="a", scopes=frozenset(), max_lifetime=60
    )
    assert "scope" not in decode(issued.token, store)[1]


def test_issue_caps_lifetime_at_certificate_not_after(ca: DevCA, decode: Decoder) -> None:
    svid = ca.issue_x509_svid(SpiffeId.parse("spiffe://example.org/short"), ttl=100)
    client = AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)
    store = InMemoryKeyStore()
    issued = AccessTokenIssuer(issuer=ISSUER, key_store=store).issue(
        client=client, audience="a", scopes=frozenset(), max_lifetime=3600
    )
    claims = decode(issued.token, store)[1]
    assert claims["exp"] <= svid.leaf.not_valid_after_utc.timestamp()
    assert claims["exp"] == int(svid.leaf.not_valid_after_utc.timestamp())
    assert issued.expires_in <= 100


def test_issue_refuses_client_whose_certificate_has_expired(client: AuthenticatedClient) -> None:
    not_after = client.not_after()
    assert not_after is not None
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore(), clock=lambda: not_after + 1.0)
    with pytest.raises(InvalidClientError):
        issuer.issue(client=client, audience="a", scopes=frozenset(), max_lifetime=60)
    assert issuer.issued_count == 0


def test_issue_uses_fresh_128_bit_jti(client: AuthenticatedClient) -> None:
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore())
    jtis = {issuer.issue(client=client, audience="a", scopes=frozenset(), max_lifetime=60).jti for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(base64.urlsafe_b64decode(j + "==")) == 16 for j in jtis)


def test_issued_token_repr_hides_token(client: AuthenticatedClient) -> None:
    issued = AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore()).issue(
        client=client, audience="a", scopes=frozenset(), max_lifetime=60
    )
    assert issued.token not in repr(issued)
    assert issued.token.split(".")[1] not in repr(issued)


def test_jti_starts_with_the_issue_millisecond_so_the_ledger_index_grows_at_its_end() -> None:
    before = time.time_ns() // 1_000_000
    raw = base64.urlsafe_b64decode(new_jti() + "==")
    after = time.time_ns() // 1_000_000
    assert len(raw) == 16
    assert before <= int.from_bytes(raw[:6], "big") <= after
    assert len({new_jti()[8:] for _ in range(1000)}) == 1000  # the 80 random bits differ


def test_issue_signs_with_the_new_active_key_after_a_rotation(client: AuthenticatedClient) -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    store = InMemoryKeyStore(first)
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=store)
    before = issuer.issue(client=client, audience="a", scopes=frozenset(), max_lifetime=60)
    store._key = second  # what a rotation does to the active key
    after = issuer.issue(client=client, audience="a", scopes=frozenset(), max_lifetime=60)
    for issued, key in ((before, first), (after, second)):
        jws = parse_compact(issued.token)
        verify(jws, "ES256", key.private_key.public_key())
        assert jws.header == {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"} and issued.kid == key.kid
