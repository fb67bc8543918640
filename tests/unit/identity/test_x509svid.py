"""X509-SVID validation (SPIFFE X509-SVID §2-§5): leaf rules, validity, per-trust-domain chain verification."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.devtools.devca import DevCA
from broker.identity import jwtsvid, x509svid
from broker.identity.bundle import X509Bundle, X509BundleSet
from broker.identity.errors import X509SvidError
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.x509svid import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    ChainVerificationError,
    EmptyChainError,
    InvalidSvidSpiffeIdError,
    KeyUsageError,
    LeafIsCaError,
    MultipleUriSansError,
    NoBundleForTrustDomainError,
    NoUriSanError,
    RootPathSvidError,
    spiffe_id_from_certificate,
    verify_x509_svid,
)

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "identity"
WORKLOAD = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Issuer:
    """A CA certificate and its key, to sign test certificates with."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _key_usage(*, ca: bool, digital_signature: bool | None = None, crl_sign: bool | None = None) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca if digital_signature is None else digital_signature, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False, key_cert_sign=ca,
        crl_sign=ca if crl_sign is None else crl_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def make_cert(
    issuer: Issuer | None,
    *,
    uris: Sequence[str] = (str(WORKLOAD),),
    dns: Sequence[str] = (),
    ca: bool = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = None,
    with_key_usage: bool = True,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    not_before: dt.datetime = NOW - HOUR,
    not_after: dt.datetime = NOW + HOUR,
    subject: str = "workload",
) -> Issuer:
    """A certificate signed by ``issuer`` (self-signed if None), returned with its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)])
    signing_key = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if with_key_usage:
        builder = builder.add_extension(key_usage or _key_usage(ca=ca), critical=True)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return Issuer(builder.sign(signing_key, hashes.SHA256()), key)


def root_of(ca: DevCA) -> Issuer:
    return Issuer(ca.ca_cert, ca.ca_key)


def bundles_of(*cas: DevCA) -> X509BundleSet:
    return {c.trust_domain: c.x509_bundle() for c in cas}


# --- accepted ---------------------------------------------------------------------------------------------------


def test_accepts_svid_issued_by_dev_ca(ca: DevCA, other_ca: DevCA) -> None:
    svid = ca.issue_x509_svid(WORKLOAD, ttl=300)
    assert verify_x509_svid(svid.chain, bundles_of(ca, other_ca)) == WORKLOAD


def test_accepts_chain_through_intermediate(ca: DevCA) -> None:
    intermediate = make_cert(root_of(ca), uris=["spiffe://example.org"], ca=True, eku=None, subject="intermediate")
    leaf = make_cert(intermediate)
    assert verify_x509_svid([leaf.cert, intermediate.cert], bundles_of(ca)) == WORKLOAD


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"eku": None}, id="no-extended-key-usage"),
        pytest.param({"dns": ["web.shop.svc"]}, id="extra-dns-san"),
        pytest.param({"key_usage": x509.KeyUsage(True, False, True, False, True, False, False, False, False)},
                     id="key-encipherment-and-agreement"),
    ],
)  # fmt: skip
def test_accepts_leaf_variants_spiffe_allows(ca: DevCA, options: dict[str, object]) -> None:
    leaf = make_cert(root_of(ca), **options)  # type: ignore[arg-type]
    assert verify_x509_svid([leaf.cert], bundles_of(ca)) == WORKLOAD


def test_accepts_leaf_without_authority_key_identifier(ca: DevCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(WORKLOAD))]), critical=True)
        .sign(ca.ca_key, hashes.SHA256())
    )
    assert verify_x509_svid([cert], bundles_of(ca)) == WORKLOAD


def test_naive_now_is_taken_as_utc(ca: DevCA) -> None:
    svid = ca.issue_x509_svid(WORKLOAD, ttl=300)
    naive_now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert verify_x509_svid(svid.chain, bundles_of(ca), now=naive_now) == WORKLOAD


def _spire_vector(flavour: str) -> tuple[list[x509.Certificate], X509BundleSet]:
    """An X509-SVID minted by a real spire-server (see tests/fixtures/identity/README.md) and its bundle."""
    chain = x509.load_pem_x509_certificates((VECTORS / flavour / "svid.pem").read_bytes())
    td = TrustDomain("example.org")
    return chain, {td: X509Bundle.from_pem(td, (VECTORS / flavour / "bundle.pem").read_bytes())}


@pytest.mark.parametrize("flavour", ["spire-ec", "spire-rsa"])
def test_accepts_x509_svid_minted_by_spire(flavour: str) -> None:
    chain, bundles = _spire_vector(flavour)
    during = chain[0].not_valid_before_utc + dt.timedelta(minutes=1)
    assert verify_x509_svid(chain, bundles, now=during) == WORKLOAD
    with pytest.raises(CertificateExpiredError):
        verify_x509_svid(chain, bundles, now=chain[0].not_valid_after_utc + dt.timedelta(seconds=1))


def test_refuses_spire_svid_against_another_servers_bundle_for_the_same_trust_domain_name() -> None:
    chain, _ = _spire_vector("spire-ec")
    _, other_bundles = _spire_vector("spire-rsa")
    during = chain[0].not_valid_before_utc + dt.timedelta(minutes=1)
    with pytest.raises(ChainVerificationError):
        verify_x509_svid(chain, other_bundles, now=during)


# --- refused ----------------------------------------------------------------------------------------------------

Case = Callable[[DevCA, DevCA], tuple[list[x509.Certificate], X509BundleSet]]


def _leaf(**options: object) -> Case:
    def build(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
        return [make_cert(root_of(ca), **options).cert], bundles_of(ca, other)  # type: ignore[arg-type]

    return build


def _signed_by_other_trust_domain(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    return [make_cert(root_of(other)).cert], bundles_of(ca, other)


def _through_other_trust_domains_intermediate(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    intermediate = make_cert(root_of(other), uris=["spiffe://other.test"], ca=True, eku=None, subject="inter")
    return [make_cert(intermediate).cert, intermediate.cert], bundles_of(ca, other)


def _intermediate_missing(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    intermediate = make_cert(root_of(ca), uris=["spiffe://example.org"], ca=True, eku=None, subject="inter")
    return [make_cert(intermediate).cert], bundles_of(ca, other)


def _self_signed(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    return [make_cert(None).cert], bundles_of(ca, other)


def _no_bundle(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    return [make_cert(root_of(ca)).cert], bundles_of(other)


def _empty_bundle(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    return [make_cert(root_of(ca)).cert], {ca.trust_domain: X509Bundle(ca.trust_domain, ())}


REFUSED = [
    pytest.param(_leaf(uris=[str(WORKLOAD), "spiffe://example.org/other"]), MultipleUriSansError, id="two-uri-sans"),
    pytest.param(_leaf(uris=[str(WORKLOAD), "https://example.org/"]), MultipleUriSansError, id="spiffe-and-https-uri"),
    pytest.param(_leaf(uris=[], dns=["web.example.org"]), NoUriSanError, id="dns-san-only"),
    pytest.param(_leaf(uris=[]), NoUriSanError, id="no-san-extension"),
    pytest.param(_leaf(uris=["https://example.org/ns/shop"]), InvalidSvidSpiffeIdError, id="https-uri-san"),
    pytest.param(_leaf(uris=["SPIFFE://example.org/w"]), InvalidSvidSpiffeIdError, id="uppercase-scheme"),
    pytest.param(_leaf(uris=["spiffe://Example.org/w"]), InvalidSvidSpiffeIdError, id="uppercase-trust-domain"),
    pytest.param(_leaf(uris=["spiffe://example.org/w/"]), InvalidSvidSpiffeIdError, id="trailing-slash"),
    pytest.param(_leaf(uris=["spiffe://example.org"]), RootPathSvidError, id="root-path"),
    pytest.param(_leaf(ca=True, key_usage=_key_usage(ca=False)), LeafIsCaError, id="ca-true"),
    pytest.param(_leaf(key_usage=_key_usage(ca=True, digital_signature=True)), KeyUsageError, id="key-cert-sign"),
    pytest.param(_leaf(key_usage=_key_usage(ca=False, crl_sign=True)), KeyUsageError, id="crl-sign"),
    pytest.param(_leaf(key_usage=_key_usage(ca=False, digital_signature=False)), KeyUsageError,
                 id="no-digital-signature"),
    pytest.param(_leaf(with_key_usage=False), KeyUsageError, id="no-key-usage"),
    pytest.param(_leaf(not_before=NOW - 3 * HOUR, not_after=NOW - HOUR), CertificateExpiredError, id="expired"),
    pytest.param(_leaf(not_before=NOW + HOUR, not_after=NOW + 2 * HOUR), CertificateNotYetValidError,
                 id="not-yet-valid"),
    pytest.param(_signed_by_other_trust_domain, ChainVerificationError, id="signed-by-other-trust-domains-ca"),
    pytest.param(_through_other_trust_domains_intermediate, ChainVerificationError,
                 id="through-other-trust-domains-intermediate"),
    pytest.param(_intermediate_missing, ChainVerificationError, id="intermediate-missing"),
    pytest.param(_self_signed, ChainVerificationError, id="self-signed-leaf"),
    pytest.param(_leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), ChainVerificationError, id="eku-without-client-auth"),
    pytest.param(_no_bundle, NoBundleForTrustDomainError, id="no-bundle-for-trust-domain"),
    pytest.param(_empty_bundle, NoBundleForTrustDomainError, id="empty-bundle-for-trust-domain"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "error"), REFUSED)
def test_verify_x509_svid_refuses(ca: DevCA, other_ca: DevCA, case: Case, error: type[X509SvidError]) -> None:
    chain, bundles = case(ca, other_ca)
    with pytest.raises(error) as info:
        verify_x509_svid(chain, bundles, now=NOW)
    assert type(info.value) is error


def test_refuses_empty_chain(ca: DevCA) -> None:
    with pytest.raises(EmptyChainError):
        verify_x509_svid([], bundles_of(ca))


def test_refuses_dev_ca_svid_after_its_expiry(ca: DevCA) -> None:
    svid = ca.issue_x509_svid(WORKLOAD, ttl=60)
    after_expiry = svid.leaf.not_valid_after_utc + dt.timedelta(minutes=1)  # not NOW: it was taken at import
    with pytest.raises(CertificateExpiredError):
        verify_x509_svid(svid.chain, bundles_of(ca), now=after_expiry)


def test_spiffe_id_from_certificate_checks_only_the_san(ca: DevCA) -> None:
    expired_ca_leaf = make_cert(root_of(ca), ca=True, not_after=NOW - dt.timedelta(seconds=1), not_before=NOW - HOUR)
    assert spiffe_id_from_certificate(expired_ca_leaf.cert) == WORKLOAD
    with pytest.raises(RootPathSvidError):
        spiffe_id_from_certificate(ca.ca_cert)


# --- intermediates (SPIRE with an UpstreamAuthority, nested SPIRE) --------------------------------------------


def _intermediate(parent: Issuer, subject: str, **options: object) -> Issuer:
    """A signing certificate as SPIRE's upstream-signed CA: cA true, keyCertSign, the trust domain's ID."""
    defaults: dict[str, object] = {"uris": ["spiffe://example.org"], "ca": True, "eku": None, "subject": subject}
    return make_cert(parent, **{**defaults, **options})  # type: ignore[arg-type]


def _nested(ca: DevCA, depth: int) -> tuple[list[x509.Certificate], Issuer]:
    """``depth`` intermediates below the root, returned nearest-to-leaf first, and the lowest one."""
    issuer, intermediates = root_of(ca), list[x509.Certificate]()
    for level in range(depth):
        issuer = _intermediate(issuer, f"level-{level}", uris=[])
        intermediates.insert(0, issuer.cert)
    return intermediates, issuer


def test_accepts_chain_through_nested_intermediates(ca: DevCA, other_ca: DevCA) -> None:
    """Nested SPIRE: upstream root -> root server CA -> nested server CA -> leaf."""
    intermediates, lowest = _nested(ca, 2)
    assert verify_x509_svid([make_cert(lowest).cert, *intermediates], bundles_of(ca, other_ca)) == WORKLOAD


@pytest.mark.parametrize(
    "arrange",
    [
        pytest.param(lambda leaf, inter, root: [leaf, *inter, root], id="root-included"),
        pytest.param(lambda leaf, inter, root: [leaf, *reversed(inter)], id="intermediates-out-of-order"),
    ],
)
def test_accepts_chain_variants_tls_allows(
    ca: DevCA, arrange: Callable[[x509.Certificate, list[x509.Certificate], x509.Certificate], list[x509.Certificate]]
) -> None:
    """RFC 8446 §4.4.2: the root may be sent, and certificates other than the leaf may come in any order."""
    intermediates, lowest = _nested(ca, 2)
    assert verify_x509_svid(arrange(make_cert(lowest).cert, intermediates, ca.ca_cert), bundles_of(ca)) == WORKLOAD


def test_accepts_up_to_max_intermediates_and_no_more(ca: DevCA) -> None:
    intermediates, lowest = _nested(ca, x509svid.MAX_INTERMEDIATES)
    assert verify_x509_svid([make_cert(lowest).cert, *intermediates], bundles_of(ca)) == WORKLOAD
    deeper = _intermediate(lowest, "one-too-many", uris=[])
    with pytest.raises(ChainVerificationError, match="more than"):
        verify_x509_svid([make_cert(deeper).cert, deeper.cert, *intermediates], bundles_of(ca))


def test_accepts_trust_anchor_without_key_usage_extension(ca: DevCA) -> None:
    """RFC 5280 §6.1.1 (d): a trust anchor is a name and a key (an ``openssl req -x509`` root has no keyUsage)."""
    root = make_cert(None, uris=[], ca=True, with_key_usage=False, eku=None, subject="old-style-root")
    bundles = {ca.trust_domain: X509Bundle(ca.trust_domain, (root.cert,))}
    assert verify_x509_svid([make_cert(root).cert], bundles, now=NOW) == WORKLOAD
    inter = _intermediate(root, "upstream-signed")
    assert verify_x509_svid([make_cert(inter).cert, inter.cert], bundles, now=NOW) == WORKLOAD


def test_accepts_either_root_during_ca_rotation(ca: DevCA) -> None:
    """During CA rotation the bundle holds old and new roots; a chain to either is accepted."""
    newer = DevCA.ephemeral(TrustDomain("example.org"))
    bundles = {ca.trust_domain: X509Bundle(ca.trust_domain, (newer.ca_cert, ca.ca_cert))}
    assert verify_x509_svid(ca.issue_x509_svid(WORKLOAD, ttl=60).chain, bundles) == WORKLOAD
    assert verify_x509_svid(newer.issue_x509_svid(WORKLOAD, ttl=60).chain, bundles) == WORKLOAD


def _through(**options: object) -> Case:
    def build(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
        intermediate = _intermediate(root_of(ca), "bad-intermediate", **options)
        return [make_cert(intermediate).cert, intermediate.cert], bundles_of(ca, other)

    return build


def _path_length_exceeded(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    """RFC 5280 §4.2.1.9: pathLenConstraint 0 allows no further CA below it."""
    upper = _intermediate(root_of(ca), "upper", path_length=0)
    lower = _intermediate(upper, "lower")
    return [make_cert(lower).cert, lower.cert, upper.cert], bundles_of(ca, other)


def _forged_issuer_name(ca: DevCA, other: DevCA) -> tuple[list[x509.Certificate], X509BundleSet]:
    """A CA of other.test that copies example.org's CA subject name; it signs a leaf claiming example.org."""
    key = ec.generate_private_key(ec.SECP256R1())
    forged = Issuer(
        x509.CertificateBuilder()
        .subject_name(ca.ca_cert.subject)
        .issuer_name(ca.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256()),
        key,
    )
    bundles = {ca.trust_domain: ca.x509_bundle(), other.trust_domain: X509Bundle(other.trust_domain, (forged.cert,))}
    return [make_cert(forged).cert], bundles


def _no_cert_sign(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(True, False, False, False, False, False, ca, False, False)


INTERMEDIATE_REFUSED = [
    pytest.param(_through(ca=False, key_usage=_key_usage(ca=True)), "basicConstraints.cA must be asserted",
                 id="intermediate-not-a-ca"),
    pytest.param(_through(key_usage=_no_cert_sign(ca=True)), "keyCertSign must be asserted",
                 id="intermediate-without-key-cert-sign"),
    pytest.param(_through(with_key_usage=False), "keyUsage is required", id="intermediate-without-key-usage"),
    pytest.param(_through(not_before=NOW - 3 * HOUR, not_after=NOW - HOUR), "not valid at validation time",
                 id="intermediate-expired"),
    pytest.param(_through(not_before=NOW + HOUR, not_after=NOW + 2 * HOUR), "not valid at validation time",
                 id="intermediate-not-yet-valid"),
    pytest.param(_through(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "EKU", id="intermediate-eku-excludes-client-auth"),
    pytest.param(_path_length_exceeded, "path length constraint violated", id="path-length-exceeded"),
    pytest.param(_forged_issuer_name, "signature does not match", id="issuer-name-matches-but-other-key"),
    pytest.param(_through_other_trust_domains_intermediate, "candidates exhausted",
                 id="through-other-trust-domains-intermediate"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "reason"), INTERMEDIATE_REFUSED)
def test_verify_x509_svid_refuses_bad_intermediate(ca: DevCA, other_ca: DevCA, case: Case, reason: str) -> None:
    """Checked at the real time: the dev CA roots are created after this module's ``NOW``."""
    chain, bundles = case(ca, other_ca)
    with pytest.raises(ChainVerificationError, match=reason) as info:
        verify_x509_svid(chain, bundles)
    assert type(info.value) is ChainVerificationError


# --- the error classes ------------------------------------------------------------------------------------------


def test_every_rejection_reason_has_its_own_error_class_and_code() -> None:
    classes = [getattr(x509svid, name) for name in x509svid.__all__ if name.endswith("Error")]
    assert all(issubclass(cls, X509SvidError) and cls is not X509SvidError for cls in classes)
    reasons = [cls.reason for cls in classes]
    assert len(set(reasons)) == len(reasons) == len(classes)
    assert X509SvidError.reason not in reasons
    jwt_reasons = {getattr(jwtsvid, name).reason for name in jwtsvid.__all__ if name.endswith("Error")}
    assert not jwt_reasons & set(reasons)


# --- the peer's role: extended key usage (RFC 5280 §4.2.1.12) ----------------------------------------------------


def test_leaf_with_only_server_auth_passes_as_a_server_and_fails_as_a_client(ca: DevCA) -> None:
    leaf = make_cert(root_of(ca), eku=[ExtendedKeyUsageOID.SERVER_AUTH]).cert
    assert verify_x509_svid([leaf], bundles_of(ca), role="server") == WORKLOAD
    with pytest.raises(ChainVerificationError, match="clientAuth"):
        verify_x509_svid([leaf], bundles_of(ca), role="client")


def test_leaf_with_only_client_auth_passes_as_a_client_and_fails_as_a_server(ca: DevCA) -> None:
    leaf = make_cert(root_of(ca), eku=[ExtendedKeyUsageOID.CLIENT_AUTH]).cert
    assert verify_x509_svid([leaf], bundles_of(ca), role="client") == WORKLOAD
    with pytest.raises(ChainVerificationError, match="serverAuth"):
        verify_x509_svid([leaf], bundles_of(ca), role="server")


@pytest.mark.parametrize("role", ["client", "server"])
def test_spiffe_svid_with_both_purposes_or_none_passes_in_either_role(ca: DevCA, role: x509svid.Role) -> None:
    both = ca.issue_x509_svid(WORKLOAD, ttl=300).chain
    assert verify_x509_svid(both, bundles_of(ca), role=role) == WORKLOAD
    assert verify_x509_svid([make_cert(root_of(ca), eku=None).cert], bundles_of(ca), role=role) == WORKLOAD


def test_intermediate_with_uri_name_constraints_is_refused_fail_closed(ca: DevCA) -> None:
    """cryptography does not evaluate URI name constraints: even one the leaf satisfies refuses the chain."""
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.UniformResourceIdentifier("example.org")], excluded_subtrees=None
    )
    parent = root_of(ca)
    intermediate = _intermediate(parent, "constrained")
    constrained = Issuer(
        x509.CertificateBuilder()
        .subject_name(intermediate.cert.subject)
        .issuer_name(parent.cert.subject)
        .public_key(intermediate.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(intermediate.key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
        .add_extension(constraints, critical=True)
        .sign(parent.key, hashes.SHA256()),
        intermediate.key,
    )
    leaf = make_cert(constrained)
    with pytest.raises(ChainVerificationError, match=r"(?i)unsupported|name constraint"):
        verify_x509_svid([leaf.cert, constrained.cert], bundles_of(ca))
