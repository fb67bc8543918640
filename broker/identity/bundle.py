"""Trust bundles: X.509 authorities and JWT authorities of one trust domain.

JWT bundles are JWK Sets (SPIFFE Trust Domain and Bundle §4). A key whose ``use`` is ``x509-svid`` is an X.509
authority and never a JWT authority (§4.2.1); SPIRE's Workload API serves JWT bundles whose keys carry no ``use``
at all, which we accept as JWT authorities. Every JWT authority needs a ``kid`` (JWT-SVID §3 picks the key by it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.identity.errors import BundleError
from broker.identity.spiffeid import TrustDomain
from broker.jose import jwk as jose_jwk
from broker.jose.errors import InvalidJwkError, SymmetricKeyError

__all__ = ["JwtAuthority", "JwtBundle", "JwtBundleSet", "X509Bundle", "X509BundleSet"]

USE_JWT_SVID = "jwt-svid"
USE_X509_SVID = "x509-svid"


@dataclass(frozen=True)
class X509Bundle:
    """The X.509 authorities (root CA certificates) of one trust domain."""

    trust_domain: TrustDomain
    authorities: tuple[x509.Certificate, ...]

    @classmethod
    def from_der(cls, trust_domain: TrustDomain, data: bytes) -> X509Bundle:
        """Parse concatenated ASN.1 DER certificates (the Workload API's bundle encoding)."""
        try:
            certs = tuple(x509.load_der_x509_certificate(der) for der in split_der_sequence(data))
        except ValueError as exc:
            raise BundleError(f"X.509 bundle for {trust_domain} is not valid DER: {exc}") from None
        if not certs:
            raise BundleError(f"X.509 bundle for {trust_domain} is empty")
        return cls(trust_domain, certs)

    @classmethod
    def from_pem(cls, trust_domain: TrustDomain, data: bytes) -> X509Bundle:
        try:
            certs = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise BundleError(f"X.509 bundle for {trust_domain} is not valid PEM: {exc}") from None
        return cls(trust_domain, certs)

    def to_der(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.authorities)

    def to_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.authorities)


@dataclass(frozen=True)
class JwtAuthority:
    """One JWT signing authority: its key ID, public key and declared ``use`` (None if absent)."""

    kid: str
    public_key: PublicKeyTypes = field(repr=False)
    use: str | None = None
    jwk: Mapping[str, Any] = field(repr=False, default_factory=dict, compare=False)


@dataclass(frozen=True)
class JwtBundle:
    """The JWT authorities of one trust domain, by key ID."""

    trust_domain: TrustDomain
    authorities: Mapping[str, JwtAuthority]

    @classmethod
    def from_jwks(cls, trust_domain: TrustDomain, data: bytes | str) -> JwtBundle:
        """Parse a JWK Set, keeping ``use``; keys for X.509 (``use: x509-svid``) are left out."""
        try:
            document = json.loads(data)
        except ValueError:
            raise BundleError(f"JWT bundle for {trust_domain} is not JSON") from None
        keys = jose_jwk.jwks_keys(document)
        if keys is None:
            raise BundleError(f"JWT bundle for {trust_domain} has no 'keys' array")
        authorities: dict[str, JwtAuthority] = {}
        for entry in keys:
            authority = _jwt_authority_from_jwk(trust_domain, entry)
            if authority is None:
                continue
            if authority.kid in authorities:
                raise BundleError(f"JWT bundle for {trust_domain} has two keys with kid {authority.kid!r}")
            authorities[authority.kid] = authority
        return cls(trust_domain, authorities)

    def to_jwks(self) -> bytes:
        keys = []
        for authority in self.authorities.values():
            key = dict(authority.jwk)
            key["kid"] = authority.kid
            key["use"] = authority.use or USE_JWT_SVID
            keys.append(key)
        return json.dumps({"keys": keys}, separators=(",", ":")).encode()

    def find(self, kid: str) -> JwtAuthority | None:
        return self.authorities.get(kid)


def _jwt_authority_from_jwk(trust_domain: TrustDomain, entry: object) -> JwtAuthority | None:
    if not isinstance(entry, dict):
        raise BundleError(f"JWT bundle for {trust_domain} has a key that is not an object")
    use = entry.get("use")
    if use is not None and use != USE_JWT_SVID:
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise BundleError(f"JWT bundle for {trust_domain} has a JWT authority without 'kid'")
    if entry.get("kty") == "oct":
        raise BundleError(f"JWT bundle for {trust_domain} has a symmetric key {kid!r}")
    public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k", "oth")}
    try:
        public_key = jose_jwk.public_key(public)
    except SymmetricKeyError:
        raise BundleError(f"JWT bundle for {trust_domain} has a symmetric key {kid!r}") from None
    except InvalidJwkError:
        raise BundleError(f"JWT bundle for {trust_domain} has an unreadable key {kid!r}") from None
    return JwtAuthority(kid=kid, public_key=public_key, use=use, jwk=public)


def split_der_sequence(data: bytes) -> list[bytes]:
    """Split concatenated ASN.1 DER values (each a SEQUENCE with a definite length) into single values."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30 or offset + 2 > len(data):
            raise ValueError("not a DER SEQUENCE")
        first = data[offset + 1]
        header = 2
        length = first
        if first & 0x80:
            count = first & 0x7F
            if count == 0 or count > 4 or offset + 2 + count > len(data):
                raise ValueError("bad DER length")
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
            header += count
        end = offset + header + length
        if end > len(data):
            raise ValueError("truncated DER value")
        items.append(data[offset:end])
        offset = end
    return items


X509BundleSet = Mapping[TrustDomain, X509Bundle]
JwtBundleSet = Mapping[TrustDomain, JwtBundle]
