"""The checks of a DPoP proof (RFC 9449 §4.3), one function per item; :func:`broker.oauth.dpop.check_proof`
runs them in the RFC's order. Also ``ath`` (§4.2) and the server-nonce protocol (§8, §9).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.jose import jws
from broker.jose.errors import InvalidJwkError, JoseError, KeyAlgorithmMismatchError, MalformedJwsError, WeakKeyError
from broker.jose.jwk import ImportedKey, PublicKeyCache
from broker.jose.jwt import finite_number
from broker.oauth._rfc3986 import normalize_http_uri
from broker.oauth.dpop_errors import (
    AthMismatchError,
    CriticalHeaderError,
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
)
from broker.oauth.replay import MAX_JTI_LENGTH

__all__ = [
    "DPOP_TYPE",
    "MAX_PROOF_LENGTH",
    "NonceCheck",
    "access_token_hash",
    "check_ath",
    "check_header",
    "check_iat",
    "check_no_private_key",
    "check_nonce",
    "check_request",
    "parse_proof",
    "proof_key",
    "required_claims",
    "verify_proof",
]

DPOP_TYPE = "dpop+jwt"
MAX_PROOF_LENGTH = 8192
_TYPES = frozenset({DPOP_TYPE, "application/" + DPOP_TYPE})  # RFC 7515 §4.1.9: the prefix may be omitted
# RFC 7518 §6.2.2 (EC), §6.3.2 (RSA), §6.4 (oct), RFC 8037 §2 (OKP): members that only a private key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class NonceCheck(Protocol):
    """A server's nonces (§8, §9), e.g. :class:`broker.oauth.dpop_nonce.NonceSource`."""

    def current(self) -> str: ...

    def check(self, nonce: str) -> bool: ...


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url (no padding) of SHA-256 over the ASCII access token."""
    return jws.b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def parse_proof(proof: str) -> jws.CompactJws:
    """Item 2."""
    if not isinstance(proof, str) or len(proof) > MAX_PROOF_LENGTH:
        raise MalformedProofError(f"DPoP proof is not a string of at most {MAX_PROOF_LENGTH} characters")
    try:
        return jws.parse_compact(proof)
    except MalformedJwsError:
        raise MalformedProofError("DPoP proof is not a well-formed JWT (RFC 9449 §4.3)") from None


def required_claims(claims: Mapping[str, Any], *, ath_required: bool) -> tuple[str, str, str, float]:
    """Item 3: ``jti``, ``htm``, ``htu``, ``iat`` (and ``ath``) present with their JSON types."""
    jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise MissingClaimError(f"DPoP proof needs a jti of 1 to {MAX_JTI_LENGTH} characters (RFC 9449 §4.2)")
    if not isinstance(htm, str) or not isinstance(htu, str):
        raise MissingClaimError("DPoP proof needs htm and htu strings (RFC 9449 §4.2)")
    try:
        iat = finite_number(claims.get("iat"))
    except ValueError:
        raise MissingClaimError("DPoP proof needs an iat number (RFC 9449 §4.2)") from None
    if ath_required and not isinstance(claims.get("ath"), str):
        raise MissingClaimError("DPoP proof for an access token needs ath (RFC 9449 §4.2)")
    if "nonce" in claims and not isinstance(claims["nonce"], str):
        raise MissingClaimError("DPoP proof nonce is not a string (RFC 9449 §4.2)")
    return jti, htm, htu, iat


def check_header(header: Mapping[str, Any], algorithms: Collection[str]) -> str:
    """Items 4 and 5, and no ``crit``."""
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _TYPES:
        raise ProofTypeError("DPoP proof typ must be dpop+jwt (RFC 9449 §4.2)")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in jws.ALGORITHMS:
        raise ProofAlgorithmError("DPoP proof algorithm is not allowed (RFC 9449 §4.3)")
    if "crit" in header:
        raise CriticalHeaderError("DPoP proof has critical header extensions we do not understand")
    return alg


_PROOF_KEYS = PublicKeyCache()


def proof_key(jwk: object, alg: str) -> ImportedKey:
    """Item 6, the key: a JSON object with a public key of the type ``alg`` needs; its own ``alg``/``use`` fit."""
    if not isinstance(jwk, dict):
        raise ProofKeyError("DPoP proof has no jwk header object (RFC 9449 §4.2)")
    if ("alg" in jwk and jwk["alg"] != alg) or ("use" in jwk and jwk["use"] != "sig"):
        raise ProofKeyError("DPoP proof jwk declares another alg or use (RFC 7517 §4.2, §4.4)")
    try:
        return _PROOF_KEYS.get(jwk)
    except InvalidJwkError:
        raise ProofKeyError("DPoP proof jwk is not a usable public key") from None


def verify_proof(compact: jws.CompactJws, alg: str, key: PublicKeyTypes) -> None:
    """Item 6, the signature (the key must fit ``alg``: type, curve, RSA size)."""
    try:
        jws.verify(compact, alg, key)
    except (KeyAlgorithmMismatchError, WeakKeyError):
        raise ProofKeyError("DPoP proof jwk does not fit its algorithm") from None
    except JoseError:
        raise ProofSignatureError("DPoP proof signature does not verify (RFC 9449 §4.3)") from None


def check_request(htm: str, htu: str, *, method: str, uri: str) -> None:
    """Items 8 and 9."""
    if htm != method:
        raise HtmMismatchError("DPoP proof htm is not this request's method (RFC 9449 §4.3)")
    expected = _normalized_target(uri)
    if expected is None or normalize_http_uri(htu) != expected:
        raise HtuMismatchError("DPoP proof htu is not this request's URI (RFC 9449 §4.3)")


@functools.lru_cache(maxsize=64)
def _normalized_target(uri: str) -> str | None:
    """The request's own URI, normalised (the server's few endpoints: cached, unlike the client's ``htu``)."""
    return normalize_http_uri(uri)


def check_nonce(claims: Mapping[str, Any], nonce: str | NonceCheck | None) -> str | None:
    """Item 10: with a server nonce, the proof carries it (or, for a :class:`NonceCheck`, one still valid)."""
    sent = claims.get("nonce")
    if nonce is None:
        return sent if isinstance(sent, str) else None
    fresh = nonce if isinstance(nonce, str) else nonce.current()
    if not isinstance(sent, str):
        raise MissingNonceError("DPoP proof must carry the server's nonce (RFC 9449 §8)", nonce=fresh)
    valid = hmac.compare_digest(sent.encode(), nonce.encode()) if isinstance(nonce, str) else nonce.check(sent)
    if not valid:
        raise NonceMismatchError("DPoP proof nonce is not valid: use the fresh one (RFC 9449 §8)", nonce=fresh)
    return sent


def check_iat(iat: float, *, now: float, leeway: float, max_age: float) -> None:
    """Item 11 (§11.1)."""
    if iat < now - max_age - leeway:
        raise ProofTooOldError("DPoP proof is too old (RFC 9449 §11.1)")
    if iat > now + leeway:
        raise ProofFromFutureError("DPoP proof was issued in the future (RFC 9449 §11.1)")


def check_ath(claims: Mapping[str, Any], access_token: str | None) -> None:
    """Item 12, the hash (§7.1)."""
    if access_token is None:
        return
    try:
        expected = access_token_hash(access_token)
    except UnicodeEncodeError:
        raise AthMismatchError("access token is not ASCII (RFC 9449 §4.2)") from None
    if not hmac.compare_digest(str(claims["ath"]).encode(), expected.encode()):
        raise AthMismatchError("DPoP proof ath is not the hash of the presented access token (RFC 9449 §7.1)")


def check_no_private_key(jwk: object) -> None:
    """Item 7 (``jwk`` is a dict once :func:`proof_key` accepted it)."""
    if isinstance(jwk, dict) and not _PRIVATE_MEMBERS.isdisjoint(jwk):
        raise PrivateKeyInProofError("DPoP proof jwk contains a private key (RFC 9449 §4.3)")
