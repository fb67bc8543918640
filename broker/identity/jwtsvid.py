"""JWT-SVID validation (SPIFFE JWT-SVID standard §2-§5, RFC 7515, RFC 7518, RFC 7519).

The token is parsed here, before any cryptography, and checked in this order:

1. JWS Compact Serialization only (JWT-SVID §5.1, RFC 7515 §3.1, §7.1): exactly three non-empty base64url parts
   without padding, canonically encoded (so one signed token has one spelling, which keeps replay caches keyed
   on the token sound). JWE (five parts) and the JSON serialization are refused. At most 16 KiB.
2. Header: a JSON object (UTF-8, no duplicate members, RFC 7515 §5.2) with only ``alg``, ``kid``, ``typ``
   (JWT-SVID §2; so ``crit``, ``jku``, ``x5u``, ``jwk`` ... are refused). ``alg`` is one of RS/PS/ES 256/384/512
   (§2.1). ``typ``, if present, is ``JWT`` or ``JOSE`` (§2.3). ``kid`` is required: §2.2 makes it optional,
   but the key is chosen by it and a bundle may hold several keys, so a token without one is refused.
3. Claims: a JSON object; ``sub`` a SPIFFE ID (strict parser, SPIFFE-ID §2) with a non-root path (a trust
   domain is not a workload).
4. Key: the JWT authority with that ``kid`` in the JWT bundle of ``sub``'s trust domain, and no other trust
   domain's (SPIFFE Trust Domain and Bundle §4); never a key with ``use: x509-svid``. The key type must fit
   ``alg`` (RSA >= 2048 bits for RS*/PS*, the matching curve for ES*); a JWK's own ``alg``, if set, must equal
   the header's. HMAC is never accepted, so a public key can never be used as an HMAC secret.
5. Signature (RFC 7515 §5.2 step 8), by :func:`broker.jose.jws.verify_signature`: raw ``R || S`` for ES*
   (a DER signature is refused), PSS salt as long as the hash (RFC 7518 §3.3-§3.5).
6. ``aud`` present, a string or non-empty array of strings, containing the expected audience (§3.2, RFC 7519
   §4.1.3). ``exp`` present and numeric, and ``now < exp + leeway`` (§3.3, RFC 7519 §4.1.4). ``nbf``, if
   present, numeric and ``nbf <= now + leeway`` (RFC 7519 §4.1.5). ``iat``, if present, numeric and not more
   than ``leeway`` in the future: RFC 7519 §4.1.6 does not require this, but a token "issued" in the future
   means a wrong issuer clock or a forged lifetime, and py-spiffe's acceptance of it is a known laxity.

Numbers must be finite (``NaN``/``Infinity`` literals are refused), and a NumericDate lies between the epoch and
the end of year 9999 (the last second a ``datetime`` holds), so no later arithmetic on it can overflow.
:func:`read_jwt_svid` runs steps 1-3 and the claim shapes of step 6 without key, signature or clock: only for a
JWT-SVID this process just received from its own Workload API. ECDSA signatures are malleable: ``(r, s)``
and ``(r, n - s)`` both verify (SPIRE does not normalise ``s``), so a replay cache must key on the claims
(``jti``, or ``sub``/``aud``/``iat``/``exp``), not on the token's bytes. No error message contains the token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.identity.bundle import USE_JWT_SVID, JwtAuthority, JwtBundleSet
from broker.identity.errors import InvalidSpiffeIdError, JwtSvidError
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import JwtSvid
from broker.jose import errors as jose_errors
from broker.jose import jws
from broker.jose.jws import verify_signature
from broker.jose.jwt import finite_number

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "AudienceMismatchError",
    "InvalidAudienceError",
    "InvalidSignatureError",
    "InvalidSubjectError",
    "InvalidTimeClaimError",
    "InvalidTypError",
    "KeyAlgorithmMismatchError",
    "KeyUseError",
    "MalformedTokenError",
    "MissingAudienceError",
    "MissingExpiryError",
    "MissingKeyIdError",
    "MissingSubjectError",
    "NoJwtBundleForTrustDomainError",
    "TokenExpiredError",
    "TokenIssuedInFutureError",
    "TokenNotYetValidError",
    "UnexpectedHeaderError",
    "UnknownKeyIdError",
    "UnsupportedAlgorithmError",
    "WeakKeyError",
    "read_jwt_svid",
    "validate_jwt_svid",
    "verify_jws_signature",
]

ALLOWED_ALGORITHMS = frozenset(jws.ALGORITHMS)
MAX_TOKEN_LENGTH = jws.MAX_TOKEN_LENGTH
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z


class UnsupportedAlgorithmError(JwtSvidError):
    """JWT-SVID §2.1: ``alg`` missing or not one of RS/PS/ES 256/384/512."""

    reason = "unsupported_algorithm"


class KeyAlgorithmMismatchError(JwtSvidError):
    """RFC 7518 §3: the key's type or curve does not fit ``alg`` (or the JWK's own ``alg`` differs)."""

    reason = "key_algorithm_mismatch"


class WeakKeyError(JwtSvidError):
    """RFC 7518 §3.3, §3.5: an RSA key shorter than 2048 bits."""

    reason = "weak_key"


class InvalidSignatureError(JwtSvidError):
    """RFC 7515 §5.2: the signature does not verify (or has the wrong length/encoding)."""

    reason = "invalid_signature"


class MalformedTokenError(JwtSvidError):
    """Not a JWS in compact serialization with base64url JSON-object header and claims (§5.1, RFC 7515 §7.1)."""

    reason = "malformed_token"


class UnexpectedHeaderError(JwtSvidError):
    """JWT-SVID §2: a header parameter other than ``alg``, ``kid``, ``typ``."""

    reason = "unexpected_header"


class InvalidTypError(JwtSvidError):
    """JWT-SVID §2.3: ``typ`` present but not ``JWT`` or ``JOSE``."""

    reason = "invalid_typ"


class MissingKeyIdError(JwtSvidError):
    """No ``kid`` header (or not a non-empty string): the signing key cannot be chosen."""

    reason = "missing_kid"


class MissingSubjectError(JwtSvidError):
    """JWT-SVID §3.1: no ``sub`` claim (or not a string)."""

    reason = "missing_subject"


class InvalidSubjectError(JwtSvidError):
    """JWT-SVID §3.1: ``sub`` is not a workload SPIFFE ID."""

    reason = "invalid_subject"


class NoJwtBundleForTrustDomainError(JwtSvidError):
    """No JWT bundle is loaded for the trust domain of ``sub``."""

    reason = "no_jwt_bundle"


class UnknownKeyIdError(JwtSvidError):
    """The bundle of ``sub``'s trust domain has no JWT authority with this ``kid``."""

    reason = "unknown_kid"


class KeyUseError(JwtSvidError):
    """Trust Domain and Bundle §4.2.1: the key's ``use`` is not ``jwt-svid`` (e.g. an X.509 authority)."""

    reason = "key_not_for_jwt_svid"


class MissingAudienceError(JwtSvidError):
    """JWT-SVID §3.2: no ``aud`` claim, or an empty one."""

    reason = "missing_audience"


class InvalidAudienceError(JwtSvidError):
    """RFC 7519 §4.1.3: ``aud`` is neither a string nor an array of strings."""

    reason = "invalid_audience"


class AudienceMismatchError(JwtSvidError):
    """JWT-SVID §3.2: the validator's audience is not an ``aud`` element."""

    reason = "audience_mismatch"


class MissingExpiryError(JwtSvidError):
    """JWT-SVID §3.3: no ``exp`` claim."""

    reason = "missing_expiry"


class InvalidTimeClaimError(JwtSvidError):
    """RFC 7519 §2 NumericDate: ``exp``, ``nbf`` or ``iat`` is not a finite number."""

    reason = "invalid_time_claim"


class TokenExpiredError(JwtSvidError):
    """RFC 7519 §4.1.4: ``exp`` (plus leeway) has passed."""

    reason = "token_expired"


class TokenNotYetValidError(JwtSvidError):
    """RFC 7519 §4.1.5: ``nbf`` is later than now plus leeway."""

    reason = "token_not_yet_valid"


class TokenIssuedInFutureError(JwtSvidError):
    """``iat`` is later than now plus leeway (see the module docstring)."""

    reason = "token_issued_in_future"


_ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
_ALLOWED_TYP = ("JWT", "JOSE")
_SIGNATURE_ERRORS: Mapping[type[jose_errors.JoseError], type[JwtSvidError]] = {
    jose_errors.KeyAlgorithmMismatchError: KeyAlgorithmMismatchError,
    jose_errors.WeakKeyError: WeakKeyError,
    jose_errors.BadSignatureError: InvalidSignatureError,
}


def shown(value: object) -> str:
    """A header or claim value for an error message: repr, cut short (it is attacker-chosen)."""
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def verify_jws_signature(alg: str, public_key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """Verify a JWS signature (RFC 7515 §5.2 step 8) for one of the JWT-SVID algorithms; raise on failure."""
    if alg not in ALLOWED_ALGORITHMS:
        raise UnsupportedAlgorithmError(f"algorithm {shown(alg)} is not allowed for a JWT-SVID")
    _verify_signature(alg, public_key, signing_input, signature)


def _verify_signature(alg: str, public_key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """Step 5 for an ``alg`` step 2 has allowed: the JOSE core's verification, its errors mapped to ours."""
    try:
        verify_signature(alg, public_key, signing_input, signature)
    except jose_errors.JoseError as exc:
        raise _SIGNATURE_ERRORS[type(exc)](exc.description) from None


def _split(token: str) -> tuple[jws.CompactParts, bytes]:
    """RFC 7515 §7.1 compact serialization: the (still encoded) parts and the decoded signature."""
    try:
        parts = jws.split_compact(token)
        return parts, jws.b64url_decode(parts.signature)
    except jose_errors.MalformedJwsError as exc:
        raise MalformedTokenError(exc.description) from None


def _decode_object(part: str, what: str) -> dict[str, Any]:
    """RFC 7515 §5.2 steps 2-4, RFC 7519 §7.2 step 10: UTF-8 JSON object, duplicate members refused."""
    try:
        return jws.json_object(jws.b64url_decode(part), what)
    except jose_errors.JsonObjectError as exc:
        problem = "has a duplicate member" if exc.duplicate else f"is {exc.problem}"
        raise MalformedTokenError(f"token {what} {problem}") from None
    except jose_errors.MalformedJwsError as exc:
        raise MalformedTokenError(exc.description) from None


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    """JWT-SVID §2: allowed algorithm, no other parameters, ``typ`` JWT/JOSE; return (alg, kid)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        name = "missing" if alg is None else shown(alg)
        raise UnsupportedAlgorithmError(f"algorithm {name} is not allowed for a JWT-SVID")
    extra = header.keys() - _ALLOWED_HEADER
    if extra:
        names = ", ".join(shown(name) for name in sorted(extra)[:3])
        raise UnexpectedHeaderError(f"header parameters not allowed in a JWT-SVID: {names}")
    if "typ" in header and header["typ"] not in _ALLOWED_TYP:
        raise InvalidTypError(f"typ {shown(header['typ'])} is neither JWT nor JOSE")
    kid = header.get("kid")
    if kid is None:
        raise MissingKeyIdError("token header has no kid")
    if not isinstance(kid, str) or not kid:
        raise MissingKeyIdError("token kid is not a non-empty string")
    return alg, kid


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    """JWT-SVID §3.1: ``sub`` is the workload's SPIFFE ID."""
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise MissingSubjectError("token has no sub claim (or it is not a string)")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except InvalidSpiffeIdError as exc:
        raise InvalidSubjectError(f"sub is not a valid SPIFFE ID: {exc.description}") from None
    if not spiffe_id.path:
        raise InvalidSubjectError("sub is a trust domain ID, not a workload's SPIFFE ID")
    return spiffe_id


def _authority(spiffe_id: SpiffeId, kid: str, alg: str, bundles: JwtBundleSet) -> JwtAuthority:
    """The JWT authority named by ``kid`` in the bundle of ``sub``'s own trust domain."""
    td = spiffe_id.trust_domain
    bundle = bundles.get(td)
    if bundle is None or bundle.trust_domain != td:
        raise NoJwtBundleForTrustDomainError(f"no JWT bundle for trust domain {td}")
    authority = bundle.authorities.get(kid)
    if authority is None or authority.kid != kid:
        raise UnknownKeyIdError(f"no JWT authority with kid {shown(kid)} in the bundle of {td}")
    if authority.use not in (None, USE_JWT_SVID):
        raise KeyUseError(f"key {shown(kid)} of {td} is not a JWT-SVID authority (use {shown(authority.use)})")
    jwk_alg = authority.jwk.get("alg")
    if jwk_alg is not None and jwk_alg != alg:
        raise KeyAlgorithmMismatchError(f"key {shown(kid)} is for {shown(jwk_alg)}, token uses {alg}")
    return authority


def _audiences(claims: Mapping[str, Any], audience: str) -> tuple[str, ...]:
    """JWT-SVID §3.2, RFC 7519 §4.1.3: ``aud`` present, and ``audience`` one of its values."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        values: tuple[str, ...] = (aud,) if aud else ()
    elif isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        values = tuple(aud)
    elif aud is None:
        values = ()
    else:
        raise InvalidAudienceError("aud is neither a string nor an array of strings")
    if not values:
        raise MissingAudienceError("token has no aud claim")
    if audience not in values:
        raise AudienceMismatchError(f"token audience does not include {shown(audience)}")
    return values


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """RFC 7519 §2 NumericDate: a finite JSON number (booleans are not numbers)."""
    if name not in claims:
        return None
    try:
        value = finite_number(claims[name])
    except ValueError as exc:
        raise InvalidTimeClaimError(f"{name} is {exc}") from None
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidTimeClaimError(f"{name} is out of range (before 1970 or after 9999)")
    return value


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> int:
    """JWT-SVID §3.3, RFC 7519 §4.1.4-§4.1.6; returns ``exp`` as whole seconds."""
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise MissingExpiryError("token has no exp claim")
    if now >= exp + leeway:
        raise TokenExpiredError("token has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenNotYetValidError("token is not valid yet (nbf)")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenIssuedInFutureError("token iat is in the future")
    return int(exp)


def read_jwt_svid(token: str, *, audience: str) -> JwtSvid:
    """Read a JWT-SVID *without verifying it*: steps 1-3, then ``aud`` and the NumericDates' shapes (no clock).

    Only for bookkeeping on a token this process just received from its own Workload API (which SPIFFE ID, which
    audiences, when it expires); never to accept a token from a peer. Raises a :class:`JwtSvidError` subclass.
    """
    parts, _ = _split(token)
    _check_header(_decode_object(parts.header, "header"))
    claims = _decode_object(parts.payload, "claims")
    spiffe_id = _subject(claims)
    audiences = _audiences(claims, audience)
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise MissingExpiryError("token has no exp claim")
    _numeric_date(claims, "nbf")
    _numeric_date(claims, "iat")
    return JwtSvid(spiffe_id, audiences, int(exp), token, claims)


def validate_jwt_svid(
    token: str, *, audience: str, bundles: JwtBundleSet, leeway: float = 30.0, now: float | None = None
) -> JwtSvid:
    """Validate a JWT-SVID for ``audience`` against the JWT bundle of its subject's trust domain.

    ``now`` is seconds since the epoch (default: the current time); ``leeway`` the clock skew allowed, in seconds.
    Raises a :class:`JwtSvidError` subclass naming the rule broken.
    """
    if not audience:
        raise ValueError("audience must be a non-empty string")
    if leeway < 0:
        raise ValueError("leeway must not be negative")
    parts, signature = _split(token)
    alg, kid = _check_header(_decode_object(parts.header, "header"))
    claims = _decode_object(parts.payload, "claims")
    spiffe_id = _subject(claims)
    authority = _authority(spiffe_id, kid, alg, bundles)
    _verify_signature(alg, authority.public_key, parts.signing_input, signature)
    audiences = _audiences(claims, audience)
    expiry = _check_times(claims, time.time() if now is None else now, leeway)
    return JwtSvid(spiffe_id, audiences, expiry, token, claims)
