"""Trust bundles: JWK Set parsing (SPIFFE Trust Domain and Bundle §4) and concatenated DER certificates."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from broker.devtools.devca import DevCA
from broker.identity.bundle import JwtBundle, X509Bundle, split_der_sequence
from broker.identity.errors import BundleError
from broker.identity.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")


def ec_jwk(**members: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(ECKey.import_key(ec.generate_private_key(ec.SECP256R1()).public_key()).as_dict())
    jwk.update(members)
    return {k: v for k, v in jwk.items() if v is not None}


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


# --- JWT bundles ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use", "expected"),
    [pytest.param("jwt-svid", "jwt-svid", id="use-jwt-svid"), pytest.param(None, None, id="no-use-as-spire-serves")],
)
def test_from_jwks_keeps_jwt_authorities_with_their_use(use: str | None, expected: str | None) -> None:
    bundle = JwtBundle.from_jwks(TD, jwks(ec_jwk(kid="k1", use=use)))
    assert list(bundle.authorities) == ["k1"]
    assert bundle.authorities["k1"].use == expected
    assert isinstance(bundle.authorities["k1"].public_key, ec.EllipticCurvePublicKey)
    assert bundle.find("k1") is bundle.authorities["k1"]
    assert bundle.find("k2") is None


def test_from_jwks_drops_x509_svid_and_other_use_keys() -> None:
    x509_entry = ec_jwk(use="x509-svid", x5c=["AAAA"])  # §6.1 of X509-SVID: no kid on X.509 authorities
    document = jwks(x509_entry, ec_jwk(kid="x", use="x509-svid"), ec_jwk(kid="enc", use="enc"), ec_jwk(kid="jwt"))
    assert list(JwtBundle.from_jwks(TD, document).authorities) == ["jwt"]


def test_from_jwks_reads_rsa_keys() -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk = {**RSAKey.import_key(public).as_dict(), "kid": "r", "use": "jwt-svid"}
    assert JwtBundle.from_jwks(TD, jwks(jwk)).authorities["r"].public_key == public


def test_from_jwks_strips_private_members() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECKey.import_key(private).as_dict(private=True), "kid": "k"}
    assert "d" in jwk
    authority = JwtBundle.from_jwks(TD, jwks(jwk)).authorities["k"]
    assert "d" not in authority.jwk
    assert authority.public_key == private.public_key()
    assert not isinstance(authority.public_key, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"[]", "no 'keys' array", id="not-an-object"),
        pytest.param(b'{"keys": {}}', "no 'keys' array", id="keys-not-an-array"),
        pytest.param(b"{}", "no 'keys' array", id="no-keys"),
        pytest.param(b'{"keys": ["x"]}', "not an object", id="key-not-an-object"),
        pytest.param(jwks(ec_jwk()), "without 'kid'", id="kid-missing"),
        pytest.param(jwks(ec_jwk(kid="")), "without 'kid'", id="kid-empty"),
        pytest.param(jwks(ec_jwk(kid=7)), "without 'kid'", id="kid-not-a-string"),
        pytest.param(jwks(ec_jwk(kid="k", use="jwt-svid", x="AAAA")), "unreadable", id="point-not-on-curve"),
        pytest.param(jwks({"kid": "k", "crv": "P-256"}), "unreadable", id="kty-missing"),
        pytest.param(jwks({"kty": "oct", "k": base64.urlsafe_b64encode(b"s" * 32).decode(), "kid": "s"}),
                     "symmetric", id="symmetric-key"),
        pytest.param(jwks({"kty": "oct", "kid": "s", "use": "jwt-svid"}), "symmetric", id="symmetric-key-without-k"),
        pytest.param(jwks(ec_jwk(kid="k"), ec_jwk(kid="k")), "two keys with kid", id="duplicate-kid"),
    ],
)  # fmt: skip
def test_from_jwks_rejects(document: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        JwtBundle.from_jwks(TD, document)


def test_jwks_round_trip_keeps_keys_and_marks_them_jwt_svid() -> None:
    bundle = JwtBundle.from_jwks(TD, jwks(ec_jwk(kid="a", use="jwt-svid"), ec_jwk(kid="b")))
    again = JwtBundle.from_jwks(TD, bundle.to_jwks())
    assert {kid: a.public_key for kid, a in again.authorities.items()} == {
        kid: a.public_key for kid, a in bundle.authorities.items()
    }
    assert {kid: a.use for kid, a in again.authorities.items()} == {"a": "jwt-svid", "b": "jwt-svid"}
    assert JwtBundle.from_jwks(TD, again.to_jwks()) == again


def test_dev_ca_jwks_parses_back_to_its_bundle(ca: DevCA) -> None:
    assert JwtBundle.from_jwks(ca.trust_domain, ca.jwks()) == ca.jwt_bundle()


# --- X.509 bundles and concatenated DER -------------------------------------------------------------------------


def test_der_bundle_round_trip(ca: DevCA, other_ca: DevCA) -> None:
    rotated = DevCA.ephemeral(TD)  # a second root of the same trust domain, as during CA rotation
    bundle = X509Bundle(TD, (ca.ca_cert, other_ca.ca_cert, rotated.ca_cert))
    data = bundle.to_der()
    assert split_der_sequence(data) == [c.public_bytes(serialization.Encoding.DER) for c in bundle.authorities]
    assert X509Bundle.from_der(TD, data) == bundle
    assert X509Bundle.from_pem(TD, bundle.to_pem()) == bundle


def test_svid_chain_der_splits_into_its_certificates(ca: DevCA) -> None:
    svid = ca.issue_x509_svid(SpiffeId.parse("spiffe://example.org/w"), ttl=60)
    assert split_der_sequence(svid.chain_der() + ca.x509_bundle().to_der()) == [
        c.public_bytes(serialization.Encoding.DER) for c in (*svid.chain, ca.ca_cert)
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", [], id="empty"),
        pytest.param(b"\x30\x00", [b"\x30\x00"], id="empty-sequence"),
        pytest.param(b"\x30\x01\x05\x30\x00", [b"\x30\x01\x05", b"\x30\x00"], id="short-form-lengths"),
        pytest.param(b"\x30\x81\x02ab", [b"\x30\x81\x02ab"], id="long-form-length"),
    ],
)
def test_split_der_sequence_splits(data: bytes, expected: list[bytes]) -> None:
    assert split_der_sequence(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x02\x01\x00", id="not-a-sequence"),
        pytest.param(b"\x30", id="missing-length"),
        pytest.param(b"\x30\x05ab", id="truncated-value"),
        pytest.param(b"\x30\x80ab\x00\x00", id="indefinite-length"),
        pytest.param(b"\x30\x85\x00\x00\x00\x00\x01a", id="length-of-five-bytes"),
        pytest.param(b"\x30\x82\x01", id="truncated-long-length"),
        pytest.param(b"\x30\x00\x00", id="trailing-garbage"),
    ],
)
def test_split_der_sequence_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):
        split_der_sequence(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x03abc", id="sequence-but-not-a-certificate"),
        pytest.param(b"garbage", id="garbage"),
    ],
)
def test_from_der_rejects(data: bytes) -> None:
    with pytest.raises(BundleError):
        X509Bundle.from_der(TD, data)
