"""Identity files as an operator writes them (certificate chain, 0600 key, bundles), for the file-source tests."""

from __future__ import annotations

import os
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.identity.files import SvidFiles
from broker.identity.spiffeid import SpiffeId, TrustDomain

__all__ = ["BROKER", "TD", "write_identity"]

BROKER = SpiffeId.parse("spiffe://example.org/broker")
TD = TrustDomain("example.org")


def write_identity(directory: Path, ca: DevCA, other: DevCA | None = None) -> SvidFiles:
    svid = ca.issue_x509_svid(BROKER, ttl=600)
    (directory / "cert.pem").write_bytes(svid.chain_pem())
    fd = os.open(directory / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, svid.key_pem())
    os.close(fd)
    (directory / "bundle.pem").write_bytes(ca.x509_bundle().to_pem())
    (directory / "jwks.json").write_bytes(ca.jwks())
    x509_bundles = {TD: directory / "bundle.pem"}
    if other is not None:
        (directory / "other.pem").write_bytes(other.x509_bundle().to_pem())
        x509_bundles[other.trust_domain] = directory / "other.pem"
    return SvidFiles(
        cert=directory / "cert.pem",
        key=directory / "key.pem",
        x509_bundles=x509_bundles,
        jwt_bundles={TD: directory / "jwks.json"},
    )
