"""Sender-constrained tokens: the ``cnf`` claim (RFC 7800 §3.1) that binds an access token to a key the client
proves it holds.

* :class:`X5tS256`: RFC 8705 §3.1 certificate binding, ``cnf: {"x5t#S256": <base64url SHA-256 of the DER
  certificate>}``. The issuer writes it (:meth:`X5tS256.of_certificate`, :meth:`Binding.cnf`), the sidecar reads
  it from the token it was issued (:meth:`X5tS256.bound_in`), and a resource server compares it with the
  certificate presented on the connection (:meth:`X5tS256.matches`, RFC 8705 §3.2), in constant time.
* :class:`Jkt`: RFC 9449 §6.1 DPoP binding, ``cnf: {"jkt": <RFC 7638 SHA-256 thumbprint of the DPoP key>}``.
  The same shape, computed from a public key instead of a certificate: the token endpoint writes it for the key
  of the DPoP proof it checked (:meth:`Jkt.of_jwk`, or :attr:`broker.oauth.dpop.DpopProof.jkt`), the sidecar
  reads it (:meth:`Jkt.bound_in`), and a resource server compares it with the key of the request's proof
  (:meth:`Jkt.matches`, RFC 9449 §4.3 item 12, §7), in constant time.

A token carries one confirmation method; a verifier refuses a token presented with the other one's scheme. The
one ``x5t#S256`` computation is :func:`broker.jose.x5t.certificate_thumbprint`, the one JWK thumbprint
:func:`broker.jose.thumbprint` (RFC 7638); this module wraps them.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.jose._rfc7638 import thumbprint
from broker.jose.jwk import public_jwk
from broker.jose.x5t import certificate_thumbprint, x5t_s256

__all__ = ["CNF_CLAIM", "Binding", "Jkt", "X5tS256"]

CNF_CLAIM = "cnf"


class Binding(Protocol):
    """A confirmation method: the ``cnf`` member it writes and the value a presented key must match."""

    member: ClassVar[str]

    @property
    def value(self) -> str: ...

    def cnf(self) -> dict[str, str]: ...

    def matches(self, bound: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class X5tS256:
    """RFC 8705 §3.1: the SHA-256 thumbprint of the client certificate the token is bound to."""

    member: ClassVar[str] = "x5t#S256"
    value: str

    @classmethod
    def of_certificate(cls, certificate: x509.Certificate) -> X5tS256:
        return cls(x5t_s256(certificate))

    @classmethod
    def of_der(cls, certificate_der: bytes) -> X5tS256:
        return cls(certificate_thumbprint(certificate_der))

    @classmethod
    def bound_in(cls, claims: Mapping[str, Any]) -> object:
        """The ``cnf.x5t#S256`` member of a token's claims as found (any JSON type), or None if absent."""
        cnf = claims.get(CNF_CLAIM)
        return cnf.get(cls.member) if isinstance(cnf, dict) else None

    def cnf(self) -> dict[str, str]:
        """The ``cnf`` claim value that binds a token to this certificate."""
        return {self.member: self.value}

    def matches(self, bound: str) -> bool:
        """Whether a token bound to ``bound`` may be used with this certificate (constant-time comparison)."""
        return hmac.compare_digest(bound.encode(), self.value.encode())


@dataclass(frozen=True, slots=True)
class Jkt:
    """RFC 9449 §6.1: the RFC 7638 SHA-256 thumbprint of the public key a DPoP-bound token is bound to."""

    member: ClassVar[str] = "jkt"
    value: str

    @classmethod
    def of_jwk(cls, jwk: Mapping[str, str]) -> Jkt:
        """The binding to the public JWK ``jwk`` (only its RFC 7638 §3.2 required members count)."""
        return cls(thumbprint(jwk))

    @classmethod
    def of_public_key(cls, key: PublicKeyTypes) -> Jkt:
        """The binding to an EC or RSA public key (its JWK members as RFC 7518 §6.2.1, §6.3.1 write them)."""
        return cls(thumbprint(public_jwk(key)))

    @classmethod
    def bound_in(cls, claims: Mapping[str, Any]) -> object:
        """The ``cnf.jkt`` member of a token's claims as found (any JSON type), or None if absent."""
        cnf = claims.get(CNF_CLAIM)
        return cnf.get(cls.member) if isinstance(cnf, dict) else None

    def cnf(self) -> dict[str, str]:
        """The ``cnf`` claim value that binds a token to this key."""
        return {self.member: self.value}

    def matches(self, bound: str) -> bool:
        """Whether a token bound to ``bound`` may be used with this key (constant-time comparison)."""
        return hmac.compare_digest(bound.encode(), self.value.encode())
