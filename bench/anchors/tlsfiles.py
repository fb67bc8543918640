"""A throwaway test CA for the anchors' HTTPS endpoints (Keycloak and the SPIFFE bundle endpoint).

Keycloak's HTTPS certificate and the bundle endpoint's certificate are P-256 ECDSA leaves with the IP SAN
``127.0.0.1`` (Keycloak fetches the bundle with host name verification), issued by a P-256 test root written next
to them. The broker's token service also serves a P-256 certificate (its X.509-SVID from the dev CA), so both
sides do the same kind of handshake signature. Client certificates (the workload's X.509-SVID) come from the
broker stack's dev CA; Keycloak trusts that CA through ``truststore-paths``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker._files import write_private_file

__all__ = ["TestCa", "write_test_ca"]

LIFETIME = datetime.timedelta(days=1)


@dataclass(frozen=True)
class TestCa:
    """The root's PEM file and one server certificate + key for 127.0.0.1."""

    root: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _root(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name("anchors test root"))
        .issuer_name(_name("anchors test root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )


def _leaf(root_key: ec.EllipticCurvePrivateKey, root: x509.Certificate, key: ec.EllipticCurvePrivateKey,
          now: datetime.datetime) -> x509.Certificate:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def write_test_ca(directory: Path) -> TestCa:
    """Write ``root.pem``, ``https.pem`` and ``https.key`` (PKCS#8) into ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _root(root_key, now)
    leaf = _leaf(root_key, root, leaf_key, now)
    found = TestCa(directory / "root.pem", directory / "https.pem", directory / "https.key")
    write_private_file(found.root, root.public_bytes(serialization.Encoding.PEM))
    write_private_file(found.cert, leaf.public_bytes(serialization.Encoding.PEM))
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(found.key, key_pem)
    return found
