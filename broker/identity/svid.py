"""SVID value types: an X509-SVID with its private key, and a JWT-SVID.

Neither type ever shows its secret part in ``repr``: the private key and the token string are excluded.
``certificate_thumbprint`` / ``x5t_s256`` (the RFC 8705 §3.1 ``x5t#S256``) live in :mod:`broker.jose.x5t`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from broker.identity.spiffeid import SpiffeId
from broker.jose.x5t import certificate_thumbprint, x5t_s256

__all__ = ["JwtSvid", "X509Svid", "certificate_thumbprint", "x5t_s256"]


@dataclass(frozen=True)
class X509Svid:
    """An X509-SVID: the certificate chain (leaf first) and the leaf's private key."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    private_key: CertificateIssuerPrivateKeyTypes = field(repr=False, compare=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    def x5t_s256(self) -> str:
        return x5t_s256(self.leaf)

    def chain_der(self) -> bytes:
        """The chain as concatenated ASN.1 DER, as the Workload API carries it."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER (the Workload API's ``x509_svid_key``)."""
        return self.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class JwtSvid:
    """A JWT-SVID: the compact token and what validation established about it."""

    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    expiry: int
    token: str = field(repr=False)
    claims: dict[str, Any] = field(repr=False, default_factory=dict, compare=False)
