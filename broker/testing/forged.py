"""X509-SVIDs forged for tests (SPIFFE X509-SVID §4, §5), and chains as SPIRE issues them.

:func:`forged_svid` makes a leaf valid in every respect except, possibly, which CA signed it. The others build
X509-SVIDs as SPIRE issues them with an UpstreamAuthority (or nested): leaf, then intermediates.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.svid import X509Svid

__all__ = ["forged_svid", "intermediate_ca", "svid_through_intermediates", "upstream_source"]

_CA_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)


def forged_svid(issuing_ca: DevCA, uri: str) -> X509Svid:
    """A leaf signed by ``issuing_ca`` whose URI SAN names ``uri`` (possibly in another trust domain)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged")]))
        .issuer_name(issuing_ca.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=10))
        .not_valid_after(now + dt.timedelta(seconds=600))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(issuing_ca.ca_key, hashes.SHA256())
    )
    return X509Svid(SpiffeId.parse(uri), (cert,), key)


def intermediate_ca(parent: DevCA, name: str = "SPIRE server CA") -> DevCA:
    """A CA signed by ``parent`` (a SPIRE server CA under an upstream root); it signs leaves like a DevCA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]))
        .issuer_name(parent.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=10))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.ca_key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(parent.trust_domain.id_string())]),
            critical=False,
        )
        .sign(parent.ca_key, hashes.SHA256())
    )
    return DevCA(parent.trust_domain, key, cert, parent.jwt_key, parent.jwt_kid)


def svid_through_intermediates(root: DevCA, spiffe_id: SpiffeId, *, depth: int = 1) -> X509Svid:
    """A leaf signed through ``depth`` intermediates below ``root``; the chain carries them, nearest first."""
    issuers = [root]
    for level in range(depth):
        issuers.append(intermediate_ca(issuers[-1], f"level-{level}"))
    leaf = issuers[-1].issue_x509_svid(spiffe_id, ttl=600)
    chain = (leaf.leaf, *(issuer.ca_cert for issuer in reversed(issuers[1:])))
    return X509Svid(spiffe_id, chain, leaf.private_key)


def upstream_source(
    root: DevCA, spiffe_id: SpiffeId, *, federated: dict[TrustDomain, DevCA] | None = None, depth: int = 1
) -> InMemorySvidSource:
    """A source whose bundle is ``root`` and whose SVID chains to it through ``depth`` intermediates."""
    source = InMemorySvidSource(root, spiffe_id, federated=federated)
    source._svid = svid_through_intermediates(root, spiffe_id, depth=depth)
    return source
