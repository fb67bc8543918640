"""A development certificate authority for one trust domain.

It issues what SPIRE would: X509-SVIDs (SPIFFE X509-SVID §4-§5: one URI SAN, leaf not a CA, digitalSignature,
EKU serverAuth+clientAuth) signed by a self-signed root whose SAN is the trust domain's ID, and JWT-SVIDs (ES256,
``typ: JWT``, ``kid``; claims ``sub``, ``aud``, ``exp``, ``iat`` and an optional ``jti``). Keys persist in a
state directory as 0600 files so a restart keeps the same trust anchors. For `spiffe-broker dev` and tests only.

A leaf may also carry DNS and IP address SANs (X509-SVID §2: exactly one URI SAN, and "any number of other SAN
field types"), as SPIRE does for an entry's ``dns_names``, so that a stock HTTPS client that checks the server's
name (RFC 9110 §4.3.4, RFC 6125 §6) accepts a server's SVID. :meth:`DevCA.with_server_names` gives the same CA
(same keys, same bundles) issuing such leaves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.jwk import ECKey

from broker._files import write_private_file
from broker.identity.bundle import USE_JWT_SVID, JwtAuthority, JwtBundle, X509Bundle
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.svid import JwtSvid, X509Svid
from broker.jose import thumbprint
from broker.jose.jwk import ec_public_jwk

__all__ = ["DevCA"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_LIFETIME = dt.timedelta(days=365)
BACKDATE = dt.timedelta(seconds=10)


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _self_signed_root(trust_domain: TrustDomain, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-broker dev CA"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.id_string())]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
        key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


@dataclass
class DevCA:
    """An X.509 CA and a JWT signing key for one trust domain."""

    trust_domain: TrustDomain
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    ca_cert: x509.Certificate
    jwt_key: ec.EllipticCurvePrivateKey = field(repr=False)
    jwt_kid: str
    server_dns_names: tuple[str, ...] = ()
    server_ip_addresses: tuple[IPAddress, ...] = ()

    @classmethod
    def ephemeral(cls, trust_domain: TrustDomain | str) -> DevCA:
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        ca_key = _new_ec_key()
        jwt_key = _new_ec_key()
        return cls(td, ca_key, _self_signed_root(td, ca_key), jwt_key, _kid_for(jwt_key))

    @classmethod
    def load_or_create(cls, state_dir: Path, trust_domain: TrustDomain | str) -> DevCA:
        """Load the CA from ``state_dir`` or create and persist a new one (files 0600)."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        key_path, cert_path, jwt_path = state_dir / "ca.key", state_dir / "ca.pem", state_dir / "jwt.key"
        if key_path.exists() and cert_path.exists() and jwt_path.exists():
            ca = cls._load(td, key_path, cert_path, jwt_path)
            if ca.ca_cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=1):
                return ca
        ca = cls.ephemeral(td)
        write_private_file(key_path, _pem_key(ca.ca_key))
        write_private_file(cert_path, ca.ca_cert.public_bytes(serialization.Encoding.PEM))
        write_private_file(jwt_path, _pem_key(ca.jwt_key))
        return ca

    def with_server_names(self, *, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()) -> DevCA:
        """This CA (same keys and bundles), adding these DNS and IP address SANs to every leaf it issues.

        For a server reached by a stock HTTPS client, e.g. ``dns_names=["localhost"], ip_addresses=["127.0.0.1"]``.
        The URI SAN stays the only SPIFFE ID (X509-SVID §2); a malformed IP address is a ``ValueError``.
        """
        addresses = tuple(ipaddress.ip_address(address) for address in ip_addresses)
        return dataclasses.replace(self, server_dns_names=tuple(dns_names), server_ip_addresses=addresses)

    @classmethod
    def _load(cls, td: TrustDomain, key_path: Path, cert_path: Path, jwt_path: Path) -> DevCA:
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        jwt_key = serialization.load_pem_private_key(jwt_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(jwt_key, ec.EllipticCurvePrivateKey):
            raise ValueError("dev CA keys must be EC keys")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(td, ca_key, cert, jwt_key, _kid_for(jwt_key))

    def issue_x509_svid(self, spiffe_id: SpiffeId, *, ttl: float, dns_names: Sequence[str] = ()) -> X509Svid:
        """Issue a leaf X509-SVID for ``spiffe_id`` valid for ``ttl`` seconds (capped at the CA's expiry).

        Its SANs: the SPIFFE ID as the one URI SAN, then ``dns_names``, this CA's server DNS names and IP addresses.
        """
        if not spiffe_id.is_member_of(self.trust_domain) or not spiffe_id.path:
            raise ValueError("the dev CA issues only workload IDs in its own trust domain")
        key = _new_ec_key()
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(seconds=ttl), self.ca_cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(self._leaf_sans(spiffe_id, dns_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return X509Svid(spiffe_id=spiffe_id, chain=(cert,), private_key=key)

    def _leaf_sans(self, spiffe_id: SpiffeId, dns_names: Sequence[str]) -> x509.SubjectAlternativeName:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
        for name in dict.fromkeys([*dns_names, *self.server_dns_names]):
            names.append(x509.DNSName(name))
        names += [x509.IPAddress(address) for address in self.server_ip_addresses]
        return x509.SubjectAlternativeName(names)

    def mint_jwt_svid(
        self,
        spiffe_id: SpiffeId,
        audience: Sequence[str],
        *,
        ttl: float,
        extra_claims: Mapping[str, Any] | None = None,
        include_jti: bool = False,
    ) -> JwtSvid:
        """Sign a JWT-SVID for ``spiffe_id`` (JWT-SVID §2-§3: ES256, ``typ: JWT``, ``kid``)."""
        if not audience:
            raise ValueError("a JWT-SVID needs at least one audience")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": str(spiffe_id), "aud": list(audience), "iat": now, "exp": now + int(ttl)}
        if include_jti:
            claims["jti"] = secrets.token_urlsafe(16)
        claims.update(extra_claims or {})
        header = {"alg": "ES256", "kid": self.jwt_kid, "typ": "JWT"}
        key = ECKey.import_key(_pem_key(self.jwt_key))
        token = jwt.encode(header, claims, key, algorithms=["ES256"])
        return JwtSvid(spiffe_id, tuple(audience), claims["exp"], token, claims)

    def x509_bundle(self) -> X509Bundle:
        return X509Bundle(self.trust_domain, (self.ca_cert,))

    def jwt_bundle(self) -> JwtBundle:
        jwk = ECKey.import_key(self.jwt_key.public_key()).as_dict(private=False)
        authority = JwtAuthority(kid=self.jwt_kid, public_key=self.jwt_key.public_key(), use=USE_JWT_SVID, jwk=jwk)
        return JwtBundle(self.trust_domain, {self.jwt_kid: authority})

    def jwks(self) -> bytes:
        """The JWT bundle as a JWK Set whose keys carry ``use: jwt-svid``."""
        return self.jwt_bundle().to_jwks()


def _kid_for(key: ec.EllipticCurvePrivateKey) -> str:
    return thumbprint(ec_public_jwk(key.public_key()))
