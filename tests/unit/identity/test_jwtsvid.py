"""JWT-SVID validation (SPIFFE JWT-SVID §2-§5, RFC 7515/7518/7519): one case per rejection reason, exact class."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey

from broker.devtools.devca import DevCA
from broker.identity import jwtsvid
from broker.identity.bundle import JwtAuthority, JwtBundle, JwtBundleSet
from broker.identity.errors import JwtSvidError
from broker.identity.jwtsvid import (
    AudienceMismatchError,
    InvalidAudienceError,
    InvalidSignatureError,
    InvalidSubjectError,
    InvalidTimeClaimError,
    InvalidTypError,
    KeyAlgorithmMismatchError,
    KeyUseError,
    MalformedTokenError,
    MissingAudienceError,
    MissingExpiryError,
    MissingKeyIdError,
    MissingSubjectError,
    NoJwtBundleForTrustDomainError,
    TokenExpiredError,
    TokenIssuedInFutureError,
    TokenNotYetValidError,
    UnexpectedHeaderError,
    UnknownKeyIdError,
    UnsupportedAlgorithmError,
    WeakKeyError,
    read_jwt_svid,
    validate_jwt_svid,
)
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.jose import errors
from tests.jose_helpers import AUD, DROP, NOW, OTHER_TD, SUB, TD, VECTORS, Keys, b64, claims, encode, hdr


def validate(token: str, bundles: JwtBundleSet, **options: Any) -> Any:
    return validate_jwt_svid(token, audience=AUD, bundles=bundles, now=NOW, **options)


# --- accepted ---------------------------------------------------------------------------------------------------

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_accepts_token_signed_with_each_allowed_algorithm(jose_keys: Keys, alg: str) -> None:
    token = jose_keys.token(alg)
    svid = validate(token, jose_keys.bundles())
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert svid.audience == (AUD,)
    assert svid.expiry == int(NOW + 300)
    assert svid.token == token
    assert svid.claims["sub"] == SUB
    assert token not in repr(svid)


def test_accepts_dev_ca_token_against_its_bundle_and_jwks(ca: DevCA) -> None:
    minted = ca.mint_jwt_svid(SpiffeId.parse(SUB), [AUD, "other"], ttl=60, include_jti=True)
    svid = validate_jwt_svid(minted.token, audience=AUD, bundles={ca.trust_domain: ca.jwt_bundle()})
    assert svid.audience == (AUD, "other")
    assert svid.claims["jti"] == minted.claims["jti"]
    from_jwks = {ca.trust_domain: JwtBundle.from_jwks(ca.trust_domain, ca.jwks())}
    assert validate_jwt_svid(minted.token, audience="other", bundles=from_jwks).spiffe_id == minted.spiffe_id


def test_accepts_spire_style_jwks_without_use(jose_keys: Keys) -> None:
    jwk = ECKey.import_key(jose_keys.private["ES256"].public_key()).as_dict(private=False)
    bundle = JwtBundle.from_jwks(TD, json.dumps({"keys": [{**jwk, "kid": "ES256"}]}))
    assert bundle.authorities["ES256"].use is None
    assert validate(jose_keys.token("ES256"), {TD: bundle}).spiffe_id == SpiffeId.parse(SUB)


def _spire_vector(flavour: str) -> tuple[str, dict[TrustDomain, JwtBundle], dict[str, Any]]:
    """A JWT-SVID minted by a real spire-server, its SPIFFE-format bundle, and the token's claims."""
    token = (VECTORS / flavour / "jwt.token").read_text("ascii").strip()
    bundle = JwtBundle.from_jwks(TD, (VECTORS / flavour / "bundle.spiffe.json").read_bytes())
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return token, {TD: bundle}, payload


@pytest.mark.parametrize(("flavour", "alg"), [("spire-ec", "ES256"), ("spire-rsa", "RS256")])
def test_accepts_jwt_svid_minted_by_spire(flavour: str, alg: str) -> None:
    token, bundles, payload = _spire_vector(flavour)
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == alg
    svid = validate_jwt_svid(token, audience=AUD, bundles=bundles, now=payload["iat"] + 1)
    assert (svid.spiffe_id, svid.audience, svid.expiry) == (SpiffeId.parse(SUB), (AUD,), payload["exp"])
    with pytest.raises(TokenExpiredError):
        validate_jwt_svid(token, audience=AUD, bundles=bundles, now=payload["exp"] + 30)
    _, other_bundles, _ = _spire_vector("spire-rsa" if flavour == "spire-ec" else "spire-ec")
    with pytest.raises(UnknownKeyIdError):
        validate_jwt_svid(token, audience=AUD, bundles=other_bundles, now=payload["iat"] + 1)


@pytest.mark.parametrize(
    ("header", "overrides"),
    [
        pytest.param({"alg": "ES256", "kid": "ES256", "typ": "JOSE"}, {}, id="typ-jose"),
        pytest.param({"alg": "ES256", "kid": "ES256"}, {}, id="no-typ"),
        pytest.param(None, {"aud": AUD}, id="aud-as-string"),
        pytest.param(None, {"aud": ["a", AUD, "b"]}, id="aud-list-containing-audience"),
        pytest.param(None, {"exp": NOW - 29}, id="expired-within-leeway"),
        pytest.param(None, {"nbf": NOW + 29}, id="nbf-within-leeway"),
        pytest.param(None, {"iat": NOW + 29}, id="iat-within-leeway"),
        pytest.param(None, {"iat": DROP}, id="no-iat"),
        pytest.param(None, {"exp": int(NOW) + 300, "nbf": int(NOW)}, id="integer-times"),
        pytest.param(None, {"jti": "x", "iss": "https://spire", "custom": {"a": [1]}}, id="other-claims"),
    ],
)
def test_accepts_token_variants(jose_keys: Keys, header: dict[str, Any] | None, overrides: dict[str, Any]) -> None:
    svid = validate(jose_keys.token("ES256", header=header, **overrides), jose_keys.bundles())
    assert svid.spiffe_id == SpiffeId.parse(SUB)


# --- refused ----------------------------------------------------------------------------------------------------

Case = Callable[[Keys], tuple[str, JwtBundleSet]]


def tok(alg: str = "ES256", *, header: dict[str, Any] | None = None, **overrides: Any) -> Case:
    return lambda k: (k.token(alg, header=header, **overrides), k.bundles())


def raw(make: Callable[[Keys], str]) -> Case:
    return lambda k: (make(k), k.bundles())


def _hs256_with_public_key_as_secret(k: Keys) -> tuple[str, JwtBundleSet]:
    public_pem = (
        k.private["ES256"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return encode(hdr(alg="HS256"), claims(), public_pem), k.bundles()


def _eddsa(k: Keys) -> tuple[str, JwtBundleSet]:
    key = ed25519.Ed25519PrivateKey.generate()
    bundles = k.bundles(ed=JwtAuthority("ed", key.public_key(), "jwt-svid"))
    return encode(hdr(alg="EdDSA", kid="ed"), claims(), key), bundles


def _alg_none(k: Keys, signature: str) -> str:
    head, body = b64(json.dumps({"alg": "none", "kid": "ES256"}).encode()), b64(json.dumps(claims()).encode())
    return f"{head}.{body}.{signature}"


def _other_trust_domains_key(k: Keys) -> tuple[str, JwtBundleSet]:
    """sub is example.org; signed by other.test's key, whose kid exists only in other.test's bundle."""
    other = ec.generate_private_key(ec.SECP256R1())
    bundles = {**k.bundles(), OTHER_TD: JwtBundle(OTHER_TD, {"o": JwtAuthority("o", other.public_key(), "jwt-svid")})}
    return encode(hdr(kid="o"), claims(), other), bundles


def _same_kid_in_other_trust_domain(k: Keys) -> tuple[str, JwtBundleSet]:
    """Both trust domains use kid "ES256"; the token for example.org is signed with other.test's key."""
    other = ec.generate_private_key(ec.SECP256R1())
    other_bundle = JwtBundle(OTHER_TD, {"ES256": JwtAuthority("ES256", other.public_key(), "jwt-svid")})
    return encode(hdr(), claims(), other), {**k.bundles(), OTHER_TD: other_bundle}


def _x509_use_key_from_jwks(k: Keys) -> tuple[str, JwtBundleSet]:
    jwk = ECKey.import_key(k.private["ES256"].public_key()).as_dict(private=False)
    bundle = JwtBundle.from_jwks(TD, json.dumps({"keys": [{**jwk, "kid": "ES256", "use": "x509-svid"}]}))
    return k.token("ES256"), {TD: bundle}


def _x509_use_authority(k: Keys) -> tuple[str, JwtBundleSet]:
    return k.token("ES256"), k.bundles(ES256=JwtAuthority("ES256", k.private["ES256"].public_key(), "x509-svid"))


def _key_for(alg: str, kid_alg: str) -> Case:
    """A token whose header says ``alg`` but whose kid names the key made for ``kid_alg`` (and signed as that)."""

    def build(k: Keys) -> tuple[str, JwtBundleSet]:
        return encode(hdr(alg=alg, kid=kid_alg), claims(), k.private[kid_alg], kid_alg), k.bundles()

    return build


def _jwk_alg_differs(k: Keys) -> tuple[str, JwtBundleSet]:
    key = k.private["PS256"]
    authority = JwtAuthority("PS256", key.public_key(), "jwt-svid", jwk={"kty": "RSA", "alg": "RS256"})
    return k.token("PS256"), k.bundles(PS256=authority)


def _weak_rsa(k: Keys) -> tuple[str, JwtBundleSet]:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return encode(hdr(alg="RS256", kid="weak"), claims(), weak), k.bundles(weak=JwtAuthority("weak", weak.public_key()))


def _tamper_signature(k: Keys) -> str:
    head, body, sig = k.token("ES256").split(".")
    raw_sig = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw_sig[10] ^= 1
    return f"{head}.{body}.{b64(bytes(raw_sig))}"


def _tamper_payload(k: Keys) -> str:
    head, _, sig = k.token("ES256").split(".")
    return f"{head}.{b64(json.dumps(claims(sub='spiffe://example.org/admin')).encode())}.{sig}"


def _der_signature(k: Keys) -> str:
    head_body = b64(json.dumps(hdr()).encode()) + "." + b64(json.dumps(claims()).encode())
    der = k.private["ES256"].sign(head_body.encode(), ec.ECDSA(hashes.SHA256()))
    return head_body + "." + b64(der)


def _short_es512_signature(k: Keys) -> str:
    head, body, sig = k.token("ES512").split(".")
    return f"{head}.{body}.{b64(base64.urlsafe_b64decode(sig + '==')[1:])}"


def _short_rsa_signature(k: Keys) -> str:
    head, body, sig = k.token("RS256").split(".")
    return f"{head}.{body}.{b64(base64.urlsafe_b64decode(sig + '==')[:-1])}"


def _with_header_json(text: str) -> Callable[[Keys], str]:
    return lambda k: b64(text.encode()) + "." + k.token("ES256").split(".", 1)[1]


def _with_payload(payload: str) -> Callable[[Keys], str]:
    return lambda k: encode(hdr(), payload, k.private["ES256"])


def _utf16_header(k: Keys) -> str:
    return b64('{"alg":"ES256","kid":"ES256"}'.encode("utf-16")) + "." + k.token().split(".", 1)[1]


def _non_canonical_signature(k: Keys) -> str:
    token = k.token("ES256")
    # 64 bytes -> 86 base64url chars; the last char carries 4 unused bits: set one of them.
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:-1] + alphabet[alphabet.index(last) | 1]


def _jwe(k: Keys) -> str:
    return ".".join([b64(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), b64(b"k" * 16), b64(b"iv"), b64(b"ct"), b64(b"tag")])


def _json_serialization(k: Keys) -> str:
    head, body, sig = k.token("ES256").split(".")
    return json.dumps({"payload": body, "protected": head, "signature": sig})


REFUSED = [
    # structure (JWT-SVID §5.1, RFC 7515 §7.1)
    pytest.param(raw(lambda k: ""), MalformedTokenError, id="empty"),
    pytest.param(raw(_jwe), MalformedTokenError, id="jwe-five-parts"),
    pytest.param(raw(lambda k: k.token().rsplit(".", 1)[0]), MalformedTokenError, id="two-parts"),
    pytest.param(raw(lambda k: k.token() + ".x"), MalformedTokenError, id="four-parts"),
    pytest.param(raw(_json_serialization), MalformedTokenError, id="json-serialization"),
    pytest.param(raw(lambda k: _alg_none(k, "")), MalformedTokenError, id="alg-none-empty-signature"),
    pytest.param(raw(lambda k: k.token() + "\n"), MalformedTokenError, id="trailing-newline"),
    pytest.param(raw(lambda k: " " + k.token()), MalformedTokenError, id="leading-space"),
    pytest.param(raw(lambda k: k.token() + "=="), MalformedTokenError, id="padded-base64"),
    pytest.param(raw(lambda k: k.token().replace("-", "+").replace("_", "/") + "+/"), MalformedTokenError,
                 id="standard-base64-alphabet"),
    pytest.param(raw(lambda k: k.token() + "AAA"), MalformedTokenError, id="impossible-base64-length"),
    pytest.param(raw(_non_canonical_signature), MalformedTokenError, id="non-canonical-base64"),
    pytest.param(raw(lambda k: "x" * 16385), MalformedTokenError, id="too-long"),
    pytest.param(raw(_with_header_json("not json")), MalformedTokenError, id="header-not-json"),
    pytest.param(raw(_with_header_json('["ES256"]')), MalformedTokenError, id="header-json-array"),
    pytest.param(raw(_with_header_json('{"alg":"ES256","kid":"ES256","alg":"none"}')), MalformedTokenError,
                 id="header-duplicate-member"),
    pytest.param(raw(_utf16_header), MalformedTokenError, id="header-utf16"),
    pytest.param(raw(_with_payload("[1]")), MalformedTokenError, id="claims-json-array"),
    pytest.param(raw(_with_payload('{"exp": NaN}')), MalformedTokenError, id="claims-nan-literal"),
    pytest.param(raw(_with_payload('{"sub":"a","sub":"b"}')), MalformedTokenError, id="claims-duplicate-member"),
    pytest.param(raw(_with_payload("[" * 5000 + "]" * 5000)), MalformedTokenError, id="claims-deeply-nested"),
    # header (JWT-SVID §2)
    pytest.param(raw(lambda k: _alg_none(k, "c2ln")), UnsupportedAlgorithmError, id="alg-none"),
    pytest.param(_hs256_with_public_key_as_secret, UnsupportedAlgorithmError, id="hs256-public-key-as-secret"),
    pytest.param(_eddsa, UnsupportedAlgorithmError, id="eddsa"),
    pytest.param(tok(header=hdr(alg="es256")), UnsupportedAlgorithmError, id="alg-lowercase"),
    pytest.param(tok(header=hdr(alg=["ES256"])), UnsupportedAlgorithmError, id="alg-not-a-string"),
    pytest.param(tok(header=hdr(alg=DROP)), UnsupportedAlgorithmError, id="alg-missing"),
    pytest.param(tok(header=hdr(crit=["exp"])), UnexpectedHeaderError, id="header-crit"),
    pytest.param(tok(header=hdr(jku="https://evil.example/jwks")), UnexpectedHeaderError, id="header-jku"),
    pytest.param(tok(header=hdr(x5u="https://evil.example/c.pem")), UnexpectedHeaderError, id="header-x5u"),
    pytest.param(tok(header=hdr(jwk={"kty": "EC"})), UnexpectedHeaderError, id="header-jwk"),
    pytest.param(tok(header=hdr(cty="JWT")), UnexpectedHeaderError, id="header-cty"),
    pytest.param(tok(header=hdr(typ="at+jwt")), InvalidTypError, id="typ-other"),
    pytest.param(tok(header=hdr(typ="jwt")), InvalidTypError, id="typ-lowercase"),
    pytest.param(tok(header=hdr(typ=None)), InvalidTypError, id="typ-null"),
    pytest.param(tok(header=hdr(kid=DROP)), MissingKeyIdError, id="kid-missing"),
    pytest.param(tok(header=hdr(kid="")), MissingKeyIdError, id="kid-empty"),
    pytest.param(tok(header=hdr(kid=7)), MissingKeyIdError, id="kid-not-a-string"),
    # subject (JWT-SVID §3.1) and key choice
    pytest.param(tok(sub=DROP), MissingSubjectError, id="sub-missing"),
    pytest.param(tok(sub=42), MissingSubjectError, id="sub-not-a-string"),
    pytest.param(tok(sub="spiffe://Example.org/ns/shop"), InvalidSubjectError, id="sub-uppercase-trust-domain"),
    pytest.param(tok(sub="SPIFFE://example.org/ns/shop"), InvalidSubjectError, id="sub-uppercase-scheme"),
    pytest.param(tok(sub=SUB + "\n"), InvalidSubjectError, id="sub-trailing-newline"),
    pytest.param(tok(sub="spiffe://example.org"), InvalidSubjectError, id="sub-trust-domain-id"),
    pytest.param(tok(sub="web"), InvalidSubjectError, id="sub-not-a-spiffe-id"),
    pytest.param(raw(_with_payload(json.dumps(claims(sub=DROP))[:-1] + ', "sub": "spiffe://example.org/\\ud800"}')),
                 InvalidSubjectError, id="sub-lone-surrogate-escape"),
    pytest.param(raw(_with_payload(json.dumps(claims(sub=DROP))[:-1] + ', "sub": "spiffe://\\udfff/a"}')),
                 InvalidSubjectError, id="sub-lone-surrogate-in-trust-domain"),
    pytest.param(tok(sub="spiffe://unknown.test/ns/shop"), NoJwtBundleForTrustDomainError,
                 id="sub-of-other-trust-domain"),
    pytest.param(tok(header=hdr(kid="nope")), UnknownKeyIdError, id="unknown-kid"),
    pytest.param(_other_trust_domains_key, UnknownKeyIdError, id="key-from-other-trust-domains-bundle"),
    pytest.param(_same_kid_in_other_trust_domain, InvalidSignatureError, id="same-kid-other-trust-domains-key"),
    pytest.param(_x509_use_key_from_jwks, UnknownKeyIdError, id="jwks-key-with-use-x509-svid"),
    pytest.param(_x509_use_authority, KeyUseError, id="authority-with-use-x509-svid"),
    # key type against alg (RFC 7518 §3)
    pytest.param(_key_for("ES256", "ES384"), KeyAlgorithmMismatchError, id="es256-with-p384-key"),
    pytest.param(_key_for("ES512", "ES256"), KeyAlgorithmMismatchError, id="es512-with-p256-key"),
    pytest.param(_key_for("RS256", "ES256"), KeyAlgorithmMismatchError, id="rs256-with-ec-key"),
    pytest.param(_key_for("PS256", "ES256"), KeyAlgorithmMismatchError, id="ps256-with-ec-key"),
    pytest.param(_key_for("ES256", "RS256"), KeyAlgorithmMismatchError, id="es256-with-rsa-key"),
    pytest.param(_jwk_alg_differs, KeyAlgorithmMismatchError, id="jwk-alg-differs-from-header"),
    pytest.param(_weak_rsa, WeakKeyError, id="rsa-1024-key"),
    # signature (RFC 7515 §5.2)
    pytest.param(raw(_tamper_signature), InvalidSignatureError, id="signature-tampered"),
    pytest.param(raw(_tamper_payload), InvalidSignatureError, id="payload-tampered"),
    pytest.param(raw(_der_signature), InvalidSignatureError, id="es256-der-signature"),
    pytest.param(raw(_short_es512_signature), InvalidSignatureError, id="es512-signature-too-short"),
    pytest.param(raw(_short_rsa_signature), InvalidSignatureError, id="rsa-signature-too-short"),
    pytest.param(_key_for("PS256", "RS256"), InvalidSignatureError, id="ps256-header-over-pkcs1-signature"),
    # audience (JWT-SVID §3.2)
    pytest.param(tok(aud=DROP), MissingAudienceError, id="aud-missing"),
    pytest.param(tok(aud=[]), MissingAudienceError, id="aud-empty-list"),
    pytest.param(tok(aud=""), MissingAudienceError, id="aud-empty-string"),
    pytest.param(tok(aud="someone-else"), AudienceMismatchError, id="aud-mismatch"),
    pytest.param(tok(aud=["a", "b"]), AudienceMismatchError, id="aud-list-without-audience"),
    pytest.param(tok(aud=AUD.upper()), AudienceMismatchError, id="aud-case-differs"),
    pytest.param(tok(aud=[AUD, 1]), InvalidAudienceError, id="aud-list-with-number"),
    pytest.param(tok(aud={"a": AUD}), InvalidAudienceError, id="aud-object"),
    # times (JWT-SVID §3.3, RFC 7519 §4.1.4-§4.1.6)
    pytest.param(tok(exp=DROP), MissingExpiryError, id="exp-missing"),
    pytest.param(tok(exp=str(NOW + 300)), InvalidTimeClaimError, id="exp-string"),
    pytest.param(tok(exp=True), InvalidTimeClaimError, id="exp-boolean"),
    pytest.param(tok(exp=None), InvalidTimeClaimError, id="exp-null"),
    pytest.param(tok(exp=10**400), InvalidTimeClaimError, id="exp-huge-integer"),
    pytest.param(raw(_with_payload(json.dumps(claims())[:-1] + ', "nbf": 1e400}')), InvalidTimeClaimError,
                 id="nbf-overflowing-float"),
    pytest.param(tok(exp=253402300800), InvalidTimeClaimError, id="exp-after-year-9999"),
    pytest.param(tok(exp=1.0e300), InvalidTimeClaimError, id="exp-finite-but-beyond-datetime"),
    pytest.param(tok(iat=-1), InvalidTimeClaimError, id="iat-before-1970"),
    pytest.param(tok(nbf="soon"), InvalidTimeClaimError, id="nbf-string"),
    pytest.param(tok(iat=[1]), InvalidTimeClaimError, id="iat-array"),
    pytest.param(tok(exp=NOW - 31), TokenExpiredError, id="expired-beyond-leeway"),
    pytest.param(tok(exp=NOW - 30), TokenExpiredError, id="expired-exactly-at-leeway"),
    pytest.param(tok(nbf=NOW + 31), TokenNotYetValidError, id="nbf-in-future"),
    pytest.param(tok(iat=NOW + 31), TokenIssuedInFutureError, id="iat-in-future"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "error"), REFUSED)
def test_validate_refuses(jose_keys: Keys, case: Case, error: type[JwtSvidError]) -> None:
    token, bundles = case(jose_keys)
    with pytest.raises(JwtSvidError) as info:
        validate(token, bundles)
    assert type(info.value) is error, info.value.description
    if token:
        for secret in {token, token.split(".")[-1]} - {""}:
            assert secret not in str(info.value)
            assert secret not in repr(info.value)


def test_read_jwt_svid_gives_subject_audiences_and_expiry_without_key_or_clock(jose_keys: Keys) -> None:
    svid = read_jwt_svid(jose_keys.token(exp=NOW - 3600), audience=AUD)  # expired, no bundle: bookkeeping only
    assert (str(svid.spiffe_id), svid.audience, svid.expiry) == (SUB, (AUD,), int(NOW - 3600))


@pytest.mark.parametrize(
    ("token", "error"),
    [
        pytest.param(lambda k: encode(hdr(), "[" * 5000 + "]" * 5000, k.private["ES256"]), MalformedTokenError,
                     id="deeply-nested-claims"),
        pytest.param(lambda k: k.token(exp=10**400), InvalidTimeClaimError, id="exp-huge-integer"),
        pytest.param(lambda k: k.token(iat=10**400), InvalidTimeClaimError, id="iat-huge-integer"),
        pytest.param(lambda k: encode(hdr(), json.dumps(claims(sub=DROP))[:-1] + ', "sub": "spiffe://a/\\ud800"}',
                                      k.private["ES256"]), InvalidSubjectError, id="sub-lone-surrogate"),
        pytest.param(lambda k: k.token(exp=DROP), MissingExpiryError, id="no-exp"),
        pytest.param(lambda k: k.token(aud="other"), AudienceMismatchError, id="other-audience"),
    ],
)  # fmt: skip
def test_read_jwt_svid_refuses_malformed_tokens_with_the_jwt_svid_error(
    jose_keys: Keys, token: Callable[[Keys], str], error: type[JwtSvidError]
) -> None:
    with pytest.raises(error):
        read_jwt_svid(token(jose_keys), audience=AUD)


def test_zero_leeway_refuses_just_expired_token(jose_keys: Keys) -> None:
    with pytest.raises(TokenExpiredError):
        validate(jose_keys.token(exp=NOW), jose_keys.bundles(), leeway=0)
    assert validate(jose_keys.token(exp=NOW + 1), jose_keys.bundles(), leeway=0).expiry == int(NOW + 1)


def test_now_defaults_to_the_current_time(ca: DevCA) -> None:
    minted = ca.mint_jwt_svid(SpiffeId.parse(SUB), [AUD], ttl=60)
    bundles = {ca.trust_domain: ca.jwt_bundle()}
    assert validate_jwt_svid(minted.token, audience=AUD, bundles=bundles).expiry == minted.expiry
    with pytest.raises(TokenExpiredError):
        validate_jwt_svid(minted.token, audience=AUD, bundles=bundles, now=minted.expiry + 31)


@pytest.mark.parametrize(
    "options",
    [pytest.param({"audience": ""}, id="empty-audience"), pytest.param({"leeway": -1.0}, id="negative-leeway")],
)
def test_refuses_bad_arguments(jose_keys: Keys, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"audience|leeway"):
        validate_jwt_svid(jose_keys.token(), bundles=jose_keys.bundles(), **{"audience": AUD, **options})


# --- the error classes ------------------------------------------------------------------------------------------


def test_every_rejection_reason_has_its_own_error_class_and_code() -> None:
    names = [name for name in jwtsvid.__all__ if name.endswith("Error")]
    classes = [getattr(jwtsvid, name) for name in names]
    assert all(issubclass(cls, JwtSvidError) and cls is not JwtSvidError for cls in classes)
    reasons = [cls.reason for cls in classes]
    assert len(set(reasons)) == len(reasons) == len(classes)
    assert JwtSvidError.reason not in reasons
    # every JOSE signature error maps to one of them (the mapping is total over what verification raises)
    assert set(jwtsvid._SIGNATURE_ERRORS.values()) | {jwtsvid.UnsupportedAlgorithmError} <= set(classes)
    assert set(jwtsvid._SIGNATURE_ERRORS) == {
        errors.KeyAlgorithmMismatchError,
        errors.WeakKeyError,
        errors.BadSignatureError,
    }


def test_each_error_class_is_raised_by_some_case() -> None:
    raised = {param.values[1] for param in REFUSED}
    declared = {getattr(jwtsvid, name) for name in jwtsvid.__all__ if name.endswith("Error")}
    assert declared == raised
