"""Tests for broker.oauth.dpop: every check of RFC 9449 §4.3 has a proof that breaks it, and its own error."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.errors import DpopProofError, InvalidDpopProofError, UseDpopNonceError
from broker.jose.jwk import public_jwk
from broker.oauth import dpop
from broker.oauth.binding import Jkt
from broker.oauth.dpop import (
    AthMismatchError,
    CriticalHeaderError,
    DpopProof,
    HtmMismatchError,
    HtuMismatchError,
    MalformedProofError,
    MissingClaimError,
    MissingNonceError,
    NonceMismatchError,
    PrivateKeyInProofError,
    ProofAlgorithmError,
    ProofFromFutureError,
    ProofKeyError,
    ProofSignatureError,
    ProofTooOldError,
    ProofTypeError,
    access_token_hash,
    check_proof,
    create_proof,
)
from tests.jose_helpers import b64
from tests.unit.oauth.dpop_helpers import DROP, HTU, NOW, TOKEN, VECTORS, forge

ALGS = frozenset({"ES256", "ES384", "ES512", "PS256", "RS256"})


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def check(proof: str, **overrides: Any) -> DpopProof:
    arguments: dict[str, Any] = {
        "htm": "GET",
        "htu": HTU,
        "now": NOW,
        "leeway": 5.0,
        "max_age": 60.0,
        "algorithms": ALGS,
    }
    arguments.update(overrides)
    return check_proof(proof, **arguments)


# --- the positive path -------------------------------------------------------------------------------------------


def test_rfc9449_example_proof_is_accepted_with_the_published_thumbprint() -> None:
    proof = check(VECTORS["proof"], htm="POST", htu=VECTORS["htu"], now=VECTORS["iat"], algorithms={"ES256"})
    assert (proof.jti, proof.iat, proof.jkt) == (VECTORS["jti"], VECTORS["iat"], VECTORS["jkt"])
    assert proof.jkt == Jkt.of_jwk(VECTORS["jwk"]).value


def test_access_token_hash_is_the_rfc9449_section_7_1_example() -> None:
    assert access_token_hash(VECTORS["access_token"]) == VECTORS["ath"]


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), None),
        (lambda: ec.generate_private_key(ec.SECP384R1()), None),
        (lambda: ec.generate_private_key(ec.SECP521R1()), None),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), None),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
    ids=["ES256", "ES384", "ES512", "PS256-default-for-RSA", "RS256-when-asked"],
)
def test_created_proof_round_trips(make_key: Any, alg: str | None) -> None:
    private_key = make_key()
    token_hash = access_token_hash(TOKEN)
    proof = create_proof(private_key, htm="GET", htu=HTU, ath=token_hash, nonce="n-1", iat=NOW, alg=alg)
    checked = check(proof, access_token=TOKEN, nonce="n-1")
    assert checked.alg == (alg or {256: "ES256", 384: "ES384", 521: "ES512"}.get(private_key.key_size, "PS256"))
    assert checked.jkt == Jkt.of_public_key(private_key.public_key()).value
    assert (checked.htm, checked.htu, checked.nonce, checked.iat) == ("GET", HTU, "n-1", NOW)


def test_created_proof_header_holds_the_public_key_only_and_a_random_jti(key: ec.EllipticCurvePrivateKey) -> None:
    first, second = (create_proof(key, htm="GET", htu=HTU) for _ in range(2))
    header = json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(first.split(".")[1] + "=="))
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key.public_key())}
    assert set(claims) == {"jti", "htm", "htu", "iat"}
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) >= 16  # 128 random bits
    assert check(first, now=claims["iat"]).jti != check(second, now=claims["iat"]).jti


@pytest.mark.parametrize(
    "arguments",
    [{"ath": TOKEN}, {"alg": "ES384"}, {"alg": "PS256"}, {"alg": "HS256"}],
    ids=["raw-token-as-ath", "alg-of-another-curve", "rsa-alg-for-ec-key", "hmac"],
)
def test_create_proof_refuses_arguments_that_would_make_a_bad_proof(
    key: ec.EllipticCurvePrivateKey, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        create_proof(key, htm="GET", htu=HTU, **arguments)


def test_create_proof_refuses_a_curve_without_a_jose_algorithm() -> None:
    with pytest.raises(ValueError):
        create_proof(ec.generate_private_key(ec.SECP256K1()), htm="GET", htu=HTU)


def test_typ_compares_case_insensitively_and_may_carry_the_application_prefix(key: ec.EllipticCurvePrivateKey) -> None:
    assert check(forge(key, header={"typ": "DPoP+JWT"}))
    assert check(forge(key, header={"typ": "application/dpop+jwt"}))


# --- §4.3 item by item -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "proof",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c.d.e",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "x" * 9000,
        b64(b'{"alg":"ES256","alg":"ES256"}') + "." + b64(b"{}") + ".c2ln",
        b64(b"[]") + "." + b64(b"{}") + ".c2ln",
    ],
    ids=["empty", "one-part", "two-parts", "jwe", "empty-signature", "too-long", "duplicate-member", "header-array"],
)
def test_item_2_not_one_well_formed_jwt(proof: str) -> None:
    with pytest.raises(MalformedProofError):
        check(proof)


def test_item_2_proof_longer_than_8_kib_is_refused_before_parsing(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MalformedProofError, match="8192"):
        check(forge(key, padding="x" * 8192))


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": DROP},
        {"jti": ""},
        {"jti": 7},
        {"jti": "j" * 257},
        {"htm": DROP},
        {"htu": DROP},
        {"htu": ["https://api.example.org/orders"]},
        {"iat": DROP},
        {"iat": "1800000000"},
        {"iat": True},
        {"nonce": 5},
    ],
    ids=[
        "no-jti",
        "empty-jti",
        "numeric-jti",
        "long-jti",
        "no-htm",
        "no-htu",
        "htu-array",
        "no-iat",
        "iat-string",
        "iat-bool",
        "nonce-number",
    ],
)
def test_item_3_required_claims(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> None:
    with pytest.raises(MissingClaimError):
        check(forge(key, **claims))


def test_item_3_ath_is_required_when_an_access_token_is_presented(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MissingClaimError, match="ath"):
        check(forge(key), access_token=TOKEN)


@pytest.mark.parametrize("typ", [DROP, "JWT", "at+jwt", "dpop", 1], ids=["none", "JWT", "at+jwt", "dpop", "number"])
def test_item_4_typ_is_dpop_jwt(key: ec.EllipticCurvePrivateKey, typ: object) -> None:
    with pytest.raises(ProofTypeError):
        check(forge(key, header={"typ": typ}))


def test_item_5_alg_none_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(key.public_key())}).encode())
    body = b64(json.dumps({"jti": "j", "htm": "GET", "htu": HTU, "iat": NOW}).encode())
    with pytest.raises(ProofAlgorithmError):
        check(f"{header}.{body}.AA")


def test_item_5_hmac_keyed_with_the_public_key_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    secret = json.dumps(public_jwk(key.public_key())).encode()
    with pytest.raises(ProofAlgorithmError):
        check(forge(key, alg="HS256", signing_key=secret))


@pytest.mark.parametrize("alg", ["ES384", "RS256", "EdDSA", DROP], ids=["ES384", "RS256", "EdDSA", "missing"])
def test_item_5_alg_outside_the_allowed_set(key: ec.EllipticCurvePrivateKey, alg: object) -> None:
    proof = forge(key, header={"alg": alg}, sign_alg="ES256")
    with pytest.raises(ProofAlgorithmError):
        check(proof, algorithms={"ES256"})


def test_crit_header_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(CriticalHeaderError):
        check(forge(key, header={"crit": ["exp"], "exp": 1}))


def test_item_6_signature_by_another_key_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ProofSignatureError):
        check(forge(key, signing_key=ec.generate_private_key(ec.SECP256R1())))


def test_item_6_altered_claims_break_the_signature(key: ec.EllipticCurvePrivateKey) -> None:
    header, _, signature = forge(key).split(".")
    body = b64(json.dumps({"jti": "proof-1", "htm": "POST", "htu": HTU, "iat": int(NOW)}).encode())
    with pytest.raises(ProofSignatureError):
        check(f"{header}.{body}.{signature}", htm="POST")


@pytest.mark.parametrize(
    "jwk",
    [
        DROP,
        "a-string",
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        "P-384-key",
        "with-alg-ES512",
        "with-use-enc",
    ],
    ids=["missing", "not-an-object", "symmetric", "point-not-on-curve", "other-curve", "own-alg-differs", "use-enc"],
)
def test_item_6_jwk_must_be_a_public_key_fit_for_alg(key: ec.EllipticCurvePrivateKey, jwk: object) -> None:
    members = public_jwk(key.public_key())
    jwk = (
        {
            "P-384-key": public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()),
            "with-alg-ES512": {**members, "alg": "ES512"},
            "with-use-enc": {**members, "use": "enc"},
        }.get(jwk, jwk)
        if isinstance(jwk, str)
        else jwk
    )
    with pytest.raises(ProofKeyError):
        check(forge(key, header={"jwk": jwk}))


def test_item_6_jwk_own_alg_and_use_when_they_fit_are_accepted(key: ec.EllipticCurvePrivateKey) -> None:
    assert check(forge(key, header={"jwk": {**public_jwk(key.public_key()), "alg": "ES256", "use": "sig"}}))


def test_item_6_rsa_key_below_2048_bits_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ProofKeyError):
        check(forge(weak, alg="RS256"))


def test_item_7_private_key_in_jwk_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    d = b64(key.private_numbers().private_value.to_bytes(32, "big"))
    with pytest.raises(PrivateKeyInProofError):
        check(forge(key, header={"jwk": {**public_jwk(key.public_key()), "d": d}}))


@pytest.mark.parametrize("htm", ["POST", "get", "GET "], ids=["other-method", "lower-case", "trailing-space"])
def test_item_8_htm_is_the_request_method(key: ec.EllipticCurvePrivateKey, htm: str) -> None:
    with pytest.raises(HtmMismatchError):
        check(forge(key, htm=htm))


HTU_EQUIVALENT = [
    ("https://api.example.org/orders", "https://api.example.org/orders"),
    ("HTTPS://API.Example.ORG/orders", "https://api.example.org/orders"),
    ("https://api.example.org:443/orders", "https://api.example.org/orders"),
    ("https://api.example.org:/orders", "https://api.example.org/orders"),
    ("http://api.example.org:80/orders", "http://api.example.org/orders"),
    ("https://api.example.org/%6Frders", "https://api.example.org/orders"),
    ("https://api.example.org/a%2fb", "https://api.example.org/a%2Fb"),
    ("https://api.example.org/a/./b/../orders", "https://api.example.org/a/orders"),
    ("https://api.example.org", "https://api.example.org/"),
    ("https://api.example.org/orders?page=2#top", "https://api.example.org/orders"),
    ("https://[2001:DB8::1]:8443/x", "https://[2001:db8::1]:8443/x"),
]
HTU_DIFFERENT = [
    ("https://api.example.org/orders", "http://api.example.org/orders"),
    ("https://api.example.org/orders", "https://api.example.org:8443/orders"),
    ("https://api.example.org/orders", "https://api.example.org/Orders"),
    ("https://api.example.org/orders", "https://api.example.org/orders/"),
    ("https://api.example.org/a%2Fb", "https://api.example.org/a/b"),
    ("https://api.example.org/orders", "https://evil.example.org/orders"),
    ("https://user@api.example.org/orders", "https://api.example.org/orders"),
    ("ftp://api.example.org/orders", "ftp://api.example.org/orders"),
    ("/orders", "/orders"),
    ("https://api.example.org/%zz", "https://api.example.org/%zz"),
    ("https://api.example.org/ orders", "https://api.example.org/ orders"),
]


@pytest.mark.parametrize(("claimed", "request_uri"), HTU_EQUIVALENT, ids=[c for c, _ in HTU_EQUIVALENT])
def test_item_9_htu_matches_after_rfc3986_normalisation(
    key: ec.EllipticCurvePrivateKey, claimed: str, request_uri: str
) -> None:
    assert check(forge(key, htu=claimed), htu=request_uri).htu == claimed
    assert check(forge(key, htu=request_uri), htu=claimed)


@pytest.mark.parametrize(("claimed", "request_uri"), HTU_DIFFERENT, ids=[f"{c} vs {r}" for c, r in HTU_DIFFERENT])
def test_item_9_htu_differs(key: ec.EllipticCurvePrivateKey, claimed: str, request_uri: str) -> None:
    with pytest.raises(HtuMismatchError):
        check(forge(key, htu=claimed), htu=request_uri)


def test_item_10_missing_nonce_is_use_dpop_nonce_with_the_fresh_nonce(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(MissingNonceError) as caught:
        check(forge(key), nonce="server-nonce")
    assert isinstance(caught.value, UseDpopNonceError)
    assert (caught.value.error, caught.value.nonce) == ("use_dpop_nonce", "server-nonce")
    assert caught.value.headers["DPoP-Nonce"] == "server-nonce"


def test_item_10_wrong_nonce_is_use_dpop_nonce(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(NonceMismatchError):
        check(forge(key, nonce="old-nonce"), nonce="server-nonce")


def test_item_10_nonce_is_not_checked_when_the_server_provided_none(key: ec.EllipticCurvePrivateKey) -> None:
    assert check(forge(key, nonce="anything")).nonce == "anything"


@pytest.mark.parametrize(
    ("iat", "error"),
    [(NOW - 65.001, ProofTooOldError), (NOW + 5.001, ProofFromFutureError)],
    ids=["older-than-max-age-plus-leeway", "later-than-leeway"],
)
def test_item_11_iat_window(key: ec.EllipticCurvePrivateKey, iat: float, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(forge(key, iat=iat))


@pytest.mark.parametrize("iat", [NOW - 65, NOW + 5, NOW], ids=["oldest", "newest", "now"])
def test_item_11_window_bounds_are_inclusive(key: ec.EllipticCurvePrivateKey, iat: float) -> None:
    assert check(forge(key, iat=iat)).iat == iat


def test_item_12_ath_of_another_token_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(AthMismatchError):
        check(forge(key, ath=access_token_hash("another-token")), access_token=TOKEN)


def test_item_12_non_ascii_access_token_cannot_match(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(AthMismatchError):
        check(forge(key, ath=access_token_hash(TOKEN)), access_token="tökén")


# --- the error tree and what errors say ---------------------------------------------------------------------


def test_every_proof_error_is_invalid_dpop_proof_or_use_dpop_nonce() -> None:
    for name in dpop.__all__:
        value = getattr(dpop, name)
        if isinstance(value, type) and issubclass(value, Exception) and value is not DpopProofError:
            assert issubclass(value, DpopProofError), name
            assert value.error in ("invalid_dpop_proof", "use_dpop_nonce"), name
    assert InvalidDpopProofError.status == UseDpopNonceError.status == 400  # RFC 9449 §5, §8


def test_errors_never_quote_the_proof_the_token_or_the_key(key: ec.EllipticCurvePrivateKey) -> None:
    proof = forge(key, ath=access_token_hash("another-token"))
    with pytest.raises(AthMismatchError) as caught:
        check(proof, access_token=TOKEN)
    text = f"{caught.value} {caught.value.description!r} {caught.value!r}"
    for secret in (proof, *proof.split("."), TOKEN, public_jwk(key.public_key())["x"]):
        assert secret not in text
