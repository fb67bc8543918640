"""A test root CA for SPIRE's ``disk`` UpstreamAuthority: SPIRE's own CA becomes an intermediate under it.

The root is what an operator's offline root looks like (RFC 5280 §4.2.1.9, §4.2.1.3: basicConstraints cA
critical, keyUsage keyCertSign and cRLSign critical, a subject key identifier so SPIRE's CA certificate gets an
authority key identifier). EC P-256, valid for two days (SPIRE's default CA TTL is one). The key file is 0600.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_LIFETIME = dt.timedelta(days=2)


def write_upstream_root(directory: Path, trust_domain: str) -> tuple[Path, Path]:
    """Create the root's key and self-signed certificate in ``directory``; return (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-broker integration tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"upstream root for {trust_domain}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # keyCertSign, cRLSign
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, exist_ok=True)
    cert_path, key_path = directory / "root.pem", directory / "root.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path
