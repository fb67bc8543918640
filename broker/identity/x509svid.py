"""X509-SVID validation (SPIFFE X509-SVID standard §2-§5).

A chain is an X509-SVID of SPIFFE ID ``spiffe://td/path`` when:

* the leaf has exactly one URI SAN, a valid SPIFFE ID with a non-root path (§2, §3.1, §5.2);
* the leaf is not a CA: basicConstraints ``cA`` is false (§4.1, §5.2);
* the leaf has the key usage extension with ``digitalSignature`` and without ``keyCertSign``/``cRLSign``
  (§4.3, §5.2);
* the leaf is inside its validity period (RFC 5280 §4.1.2.5);
* the chain verifies (RFC 5280 §6, §5.1) to the X.509 bundle of the SVID's *own* trust domain. Authorities of
  other trust domains never vouch for it, even when their bundles are loaded.

Path validation uses ``cryptography.x509.verification`` (RFC 5280 with CA/B Forum WebPKI profile checks). The
extended key usage is checked for the peer's role (``role``): when the leaf carries one it must include
``clientAuth`` for a client peer (the default) and ``serverAuth`` for a server peer
(:func:`broker.identity.spiffetls.context.check_server_id`); §4.4 asks SVIDs for both, so SPIRE's pass either
way. The chain's keys must be RSA >= 2048 bits or EC P-256/384/521 (no
Ed25519: SPIRE does not issue it), and CAs must satisfy the WebPKI CA profile (SPIRE's do). The only relaxation:
the leaf may lack an authority key identifier, which SPIFFE does not require.

Intermediates (SPIRE with an UpstreamAuthority, nested SPIRE) are verified like the leaf's issuer: each must be a
CA (basicConstraints ``cA`` true, critical; RFC 5280 §4.2.1.9) allowed to sign certificates (keyUsage
``keyCertSign``, §4.2.1.3), inside its validity period, within every ``pathLenConstraint`` above it, and
signed by the next certificate up to an authority of the leaf's own trust domain. A chain may carry at most
:data:`MAX_INTERMEDIATES` intermediates; unused extra certificates are ignored, as RFC 8446 §4.4.2 allows.

Name constraints (RFC 5280 §4.2.1.10) on URI names in an intermediate or anchor are refused, whatever they
permit: ``cryptography`` does not evaluate URI constraints, so a chain through such a CA fails closed
(:class:`ChainVerificationError`) rather than being accepted with its constraint unchecked. (DNS and IP
constraints are enforced.)

Key usage criticality (§4.3 "MUST be marked critical") is an issuer rule and is not enforced here, like
go-spiffe. A ``now`` without a time zone is taken as UTC.

TLS peers: :func:`broker.identity.spiffetls.context.peer_spiffe_id` passes the chain the peer sent (on every supported
Python) to :func:`verify_x509_svid`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from broker.identity.bundle import X509Bundle, X509BundleSet
from broker.identity.errors import InvalidSpiffeIdError, X509SvidError
from broker.identity.spiffeid import SpiffeId

__all__ = [
    "MAX_INTERMEDIATES",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "ChainVerificationError",
    "EmptyChainError",
    "InvalidSvidSpiffeIdError",
    "KeyUsageError",
    "LeafIsCaError",
    "MalformedCertificateError",
    "MultipleUriSansError",
    "NoBundleForTrustDomainError",
    "NoUriSanError",
    "Role",
    "RootPathSvidError",
    "spiffe_id_from_certificate",
    "verify_x509_svid",
]


MAX_INTERMEDIATES = 8
"""Intermediates a chain may carry (and, as ``max_chain_depth``, that a path may use): bounds the work a peer
can cause. SPIRE nested a few levels deep stays far below it."""


class EmptyChainError(X509SvidError):
    """No certificate was presented."""

    reason = "empty_chain"


class MalformedCertificateError(X509SvidError):
    """The leaf's extensions cannot be parsed (e.g. an extension appears twice, RFC 5280 §4.2)."""

    reason = "malformed_certificate"


class NoUriSanError(X509SvidError):
    """X509-SVID §2: the leaf has no URI SAN."""

    reason = "no_uri_san"


class MultipleUriSansError(X509SvidError):
    """X509-SVID §2, §5.2: validators MUST reject an SVID with more than one URI SAN."""

    reason = "multiple_uri_sans"


class InvalidSvidSpiffeIdError(X509SvidError):
    """X509-SVID §5.2 / SPIFFE-ID §2: the URI SAN is not a valid SPIFFE ID."""

    reason = "invalid_uri_san"


class RootPathSvidError(X509SvidError):
    """X509-SVID §3.1, §5.2: a leaf's SPIFFE ID MUST have a non-root path."""

    reason = "root_path_spiffe_id"


class LeafIsCaError(X509SvidError):
    """X509-SVID §4.1, §5.2: the leaf's basic constraints say it is a CA."""

    reason = "leaf_is_ca"


class KeyUsageError(X509SvidError):
    """X509-SVID §4.3, §5.2: key usage missing, without digitalSignature, or with keyCertSign/cRLSign."""

    reason = "bad_key_usage"


class CertificateExpiredError(X509SvidError):
    """RFC 5280 §4.1.2.5: the leaf's notAfter is in the past."""

    reason = "certificate_expired"


class CertificateNotYetValidError(X509SvidError):
    """RFC 5280 §4.1.2.5: the leaf's notBefore is in the future."""

    reason = "certificate_not_yet_valid"


class NoBundleForTrustDomainError(X509SvidError):
    """No X.509 bundle is loaded for the SVID's trust domain (X509-SVID §5.1)."""

    reason = "no_x509_bundle"


class ChainVerificationError(X509SvidError):
    """X509-SVID §5.1 / RFC 5280 §6: the chain does not verify to the trust domain's authorities."""

    reason = "chain_verification_failed"


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of a leaf X509-SVID: its one URI SAN, with a non-root path (§2, §3.1, §5.2)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise NoUriSanError("certificate has no subject alternative name extension") from None
    except (ValueError, x509.DuplicateExtension):
        raise MalformedCertificateError("certificate extensions cannot be parsed") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise NoUriSanError("certificate has no URI SAN")
    if len(uris) > 1:
        raise MultipleUriSansError(f"certificate has {len(uris)} URI SANs; an X509-SVID has exactly one")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidSpiffeIdError as exc:
        raise InvalidSvidSpiffeIdError(f"URI SAN is not a SPIFFE ID: {exc.description}") from None
    if not spiffe_id.path:
        raise RootPathSvidError(f"leaf SPIFFE ID {spiffe_id} has no path")
    return spiffe_id


def _check_leaf_constraints(leaf: x509.Certificate) -> None:
    """X509-SVID §4.1, §4.3, §5.2: not a CA; digitalSignature set; keyCertSign and cRLSign not set."""
    try:
        extensions = leaf.extensions
        basic = extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False  # RFC 5280 §4.2.1.9: absent basic constraints mean "not a CA"
    except (ValueError, x509.DuplicateExtension):
        raise MalformedCertificateError("certificate extensions cannot be parsed") from None
    if is_ca:
        raise LeafIsCaError("leaf certificate is a CA (basicConstraints cA=true)")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise KeyUsageError("leaf certificate has no key usage extension") from None
    if not usage.digital_signature:
        raise KeyUsageError("leaf key usage lacks digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise KeyUsageError("leaf key usage includes keyCertSign or cRLSign")


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


def _check_validity(leaf: x509.Certificate, now: dt.datetime) -> None:
    """RFC 5280 §4.1.2.5: valid from notBefore through notAfter, both inclusive."""
    if now < leaf.not_valid_before_utc:
        raise CertificateNotYetValidError(f"leaf certificate is not valid before {leaf.not_valid_before_utc}")
    if now > leaf.not_valid_after_utc:
        raise CertificateExpiredError(f"leaf certificate expired at {leaf.not_valid_after_utc}")


def _checked_leaf(leaf: x509.Certificate, bundles: X509BundleSet, now: dt.datetime) -> tuple[SpiffeId, X509Bundle]:
    spiffe_id = spiffe_id_from_certificate(leaf)
    _check_leaf_constraints(leaf)
    _check_validity(leaf, now)
    bundle = bundles.get(spiffe_id.trust_domain)
    if bundle is None or not bundle.authorities:
        raise NoBundleForTrustDomainError(f"no X.509 bundle for trust domain {spiffe_id.trust_domain}")
    return spiffe_id, bundle


Role = Literal["client", "server"]
_ROLE_EKU = {
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"),
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
}


def _leaf_policy(role: Role) -> ExtensionPolicy:
    """The WebPKI end-entity profile, but an authority key identifier is optional (SPIFFE does not require it),
    and an extended key usage, when present, must name ``role``'s purpose (RFC 5280 §4.2.1.12)."""
    wanted, name = _ROLE_EKU[role]

    def extended_key_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.ExtensionType | None) -> None:
        if usage is not None and (not isinstance(usage, x509.ExtendedKeyUsage) or wanted not in usage):
            raise ValueError(f"extendedKeyUsage does not include {name} (the peer is a {role})")

    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, extended_key_usage)
    )


def _ca_policy(anchors: Sequence[x509.Certificate]) -> ExtensionPolicy:
    """The WebPKI CA profile, but a trust anchor may lack key usage (RFC 5280 §6.1.1 (d): an anchor is a name and
    a key; its extensions are not part of path validation). Intermediates still need ``keyCertSign`` (§4.2.1.3,
    X509-SVID §4.3)."""
    trusted = frozenset(anchors)

    def key_usage(_policy: Policy, cert: x509.Certificate, usage: x509.ExtensionType | None) -> None:
        if usage is None:
            if cert not in trusted:
                raise ValueError("keyUsage is required in an intermediate CA certificate")
            return
        if not isinstance(usage, x509.KeyUsage) or not usage.key_cert_sign:
            raise ValueError("keyUsage.keyCertSign must be asserted in a CA certificate")

    return ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, key_usage)


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    bundles: X509BundleSet,
    *,
    now: dt.datetime | None = None,
    role: Role = "client",
) -> SpiffeId:
    """Verify ``chain`` (leaf first, then intermediates) as an X509-SVID; return its SPIFFE ID.

    Only the authorities of the leaf's own trust domain are trust anchors (X509-SVID §5.1). ``role`` is the
    peer's: a ``"client"`` leaf's extended key usage must allow ``clientAuth``, a ``"server"`` one's
    ``serverAuth``.
    """
    if not chain:
        raise EmptyChainError("no certificate presented")
    if len(chain) > 1 + MAX_INTERMEDIATES:
        raise ChainVerificationError(f"certificate chain has more than {MAX_INTERMEDIATES} intermediates")
    moment = _utc(now)
    leaf = chain[0]
    spiffe_id, bundle = _checked_leaf(leaf, bundles, moment)
    verifier = (
        PolicyBuilder()
        .store(Store(list(bundle.authorities)))
        .time(moment)
        .max_chain_depth(MAX_INTERMEDIATES)
        .extension_policies(ca_policy=_ca_policy(bundle.authorities), ee_policy=_leaf_policy(role))
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        raise ChainVerificationError(
            f"certificate chain does not verify to the X.509 bundle of {spiffe_id.trust_domain}: {exc}"
        ) from None
    return spiffe_id
