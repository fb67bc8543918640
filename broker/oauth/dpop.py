"""DPoP proofs (RFC 9449): made by clients (:func:`create_proof`), checked by servers (:func:`check_proof`).

:func:`check_proof` runs the checks of RFC 9449 §4.3 in the RFC's order; each failure has its own class (a
:class:`~broker.errors.InvalidDpopProofError`, ``invalid_dpop_proof``, unless said otherwise) and ``reason``:

1. exactly one ``DPoP`` header: :func:`single_proof` over the request's header values (:class:`MissingProofError`,
   :class:`MultipleProofsError`);
2. one well-formed JWT (:class:`MalformedProofError`): at most :data:`MAX_PROOF_LENGTH` characters, JWS compact
   serialization with canonical base64url, header and claims strict JSON objects (no duplicate members), by the
   one parser of :mod:`broker.jose.jws`;
3. the required claims of §4.2 with their JSON types (:class:`MissingClaimError`): ``jti`` (a non-empty string
   of at most :data:`~broker.oauth.replay.MAX_JTI_LENGTH` characters), ``htm``, ``htu`` (strings), ``iat`` (a
   finite number, RFC 7519 §2); ``ath`` when an access token is presented (§4.2, §7); ``nonce`` a string if sent;
4. ``typ`` is ``dpop+jwt`` (:class:`ProofTypeError`; media types compare case-insensitively, RFC 7515 §4.1.9);
5. ``alg`` is an asymmetric algorithm of RFC 7518 §3 that the caller allows: never ``none`` or HMAC
   (:class:`ProofAlgorithmError`); no ``crit`` header, since no extension is understood (RFC 7515 §4.1.11,
   :class:`CriticalHeaderError`);
6. the signature verifies with the public key of the ``jwk`` header (:class:`ProofSignatureError`), which must be
   a JSON object holding a usable EC or RSA public key of the type and curve ``alg`` needs, whose own ``alg`` and
   ``use``, if present, agree (RFC 7517 §4.2, §4.4; :class:`ProofKeyError`);
7. the ``jwk`` holds no private key member (RFC 7518 §6.2.2, §6.3.2; :class:`PrivateKeyInProofError`);
8. ``htm`` equals the request's method (case-sensitive, RFC 9110 §9.1; :class:`HtmMismatchError`);
9. ``htu`` equals the request's URI, query and fragment ignored, after RFC 3986 §6.2.2 and §6.2.3 normalisation
   (:mod:`broker.oauth._rfc3986`; :class:`HtuMismatchError`);
10. when the server provided a nonce, ``nonce`` matches it (§8, §9): :class:`MissingNonceError` or
    :class:`NonceMismatchError`, both :class:`~broker.errors.UseDpopNonceError` (``use_dpop_nonce``) carrying a
    fresh nonce to send in ``DPoP-Nonce``;
11. ``iat`` lies in ``[now - max_age - leeway, now + leeway]`` (§11.1; :class:`ProofTooOldError`,
    :class:`ProofFromFutureError`);
12. with an access token, ``ath`` is base64url(SHA-256(ASCII(token))) (§4.2, §7.1; :class:`AthMismatchError`).
    The second half of item 12, the token's ``cnf.jkt`` against the proof key, is the caller's: it compares
    :attr:`DpopProof.jkt` with :class:`broker.oauth.binding.Jkt` (RFC 9449 §6.1).

The errors are drawn as a tree in :mod:`broker.oauth.dpop_errors` (and importable from here); the checks live
in :mod:`broker.oauth._rfc9449`, one function per item. The replay check (§11.1) needs the shared cache and is
async: :func:`check_proof_unused`, after :func:`check_proof`. Messages never contain the proof, the token or
key material.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.jose import jws
from broker.jose.jwk import public_jwk
from broker.oauth._rfc9449 import (
    DPOP_TYPE,
    MAX_PROOF_LENGTH,
    NonceCheck,
    access_token_hash,
    check_ath,
    check_header,
    check_iat,
    check_no_private_key,
    check_nonce,
    check_request,
    parse_proof,
    proof_key,
    required_claims,
    verify_proof,
)
from broker.oauth.dpop_errors import (
    AthMismatchError,
    CriticalHeaderError,
    DpopProofError,
    HtmMismatchError,
    HtuMismatchError,
    InvalidDpopProofError,
    KeyBindingMismatchError,
    MalformedProofError,
    MissingClaimError,
    MissingNonceError,
    MissingProofError,
    MultipleProofsError,
    NonceMismatchError,
    PrivateKeyInProofError,
    ProofAlgorithmError,
    ProofFromFutureError,
    ProofKeyError,
    ProofReplayedError,
    ProofSignatureError,
    ProofTooOldError,
    ProofTypeError,
    UseDpopNonceError,
)
from broker.oauth.replay import ReplayCache, ReplayKind, replay_key

__all__ = [
    "DPOP_TYPE",
    "MAX_PROOF_LENGTH",
    "AthMismatchError",
    "CriticalHeaderError",
    "DpopProof",
    "DpopProofError",
    "HtmMismatchError",
    "HtuMismatchError",
    "InvalidDpopProofError",
    "KeyBindingMismatchError",
    "MalformedProofError",
    "MissingClaimError",
    "MissingNonceError",
    "MissingProofError",
    "MultipleProofsError",
    "NonceCheck",
    "NonceMismatchError",
    "PrivateKeyInProofError",
    "ProofAlgorithmError",
    "ProofFromFutureError",
    "ProofKeyError",
    "ProofReplayedError",
    "ProofSignatureError",
    "ProofTooOldError",
    "ProofTypeError",
    "UseDpopNonceError",
    "access_token_hash",
    "check_proof",
    "check_proof_nonce",
    "check_proof_unused",
    "create_proof",
    "single_proof",
]

_ATH = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")  # base64url of 32 bytes, canonical (RFC 7515 §2)
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class DpopProof:
    """A checked proof: what the server needs next (``jkt`` for the binding, ``jti``/``iat`` for the replay
    check, RFC 9449 §6.1, §11.1)."""

    jti: str
    iat: float
    jkt: str
    public_key: PublicKeyTypes = field(repr=False)
    alg: str
    htm: str
    htu: str
    nonce: str | None = None
    jwk: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def _default_alg(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGORITHMS.get(private_key.curve.name)
        if alg is None:
            raise ValueError("DPoP proofs are signed with P-256, P-384 or P-521 EC keys, or RSA keys")
        return alg
    return "PS256"


def _sign(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, alg: str, data: bytes) -> bytes:
    """RFC 7518 §3.3-§3.5: the signature of ``data`` (ES*: raw ``R || S``)."""
    row = jws.ALGORITHMS[alg]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if row.curve is None or not isinstance(private_key.curve, row.curve):
            raise ValueError(f"{alg} needs an EC key on its own curve")
        return jws.der_to_raw(private_key.sign(data, ec.ECDSA(row.hash)), row.coordinate_size)
    if row.family == "ES":
        raise ValueError(f"{alg} needs an EC key")
    if row.family == "PS":
        return private_key.sign(data, padding.PSS(padding.MGF1(row.hash), row.hash.digest_size), row.hash)
    return private_key.sign(data, padding.PKCS1v15(), row.hash)


def _b64json(value: Mapping[str, Any]) -> str:
    return jws.b64url_encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def create_proof(
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    htm: str,
    htu: str,
    ath: str | None = None,
    nonce: str | None = None,
    jti: str | None = None,
    iat: float | None = None,
    alg: str | None = None,
) -> str:
    """A DPoP proof JWT (RFC 9449 §4.2) for one request, signed with ``private_key``.

    Header: ``typ: dpop+jwt``, ``alg`` (default by key: ES256/384/512 for P-256/384/521, PS256 for RSA; RS256
    etc. when asked), ``jwk`` = the *public* key only. Claims: ``jti`` (default 128 random bits, base64url),
    ``htm``, ``htu`` (give it without query and fragment, §4.2), ``iat`` (default now, whole seconds), and
    ``ath`` (the value of :func:`access_token_hash`, not the token) and ``nonce`` when given."""
    alg = alg or _default_alg(private_key)
    if alg not in jws.ALGORITHMS:
        raise ValueError(f"alg must be one of {sorted(jws.ALGORITHMS)}")
    if ath is not None and not _ATH.fullmatch(ath):
        raise ValueError("ath must be access_token_hash(access_token), not the token itself")
    header = {"typ": DPOP_TYPE, "alg": alg, "jwk": public_jwk(private_key.public_key())}
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()) if iat is None else iat,
    }
    if ath is not None:
        claims["ath"] = ath
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    return f"{signing_input}.{jws.b64url_encode(_sign(private_key, alg, signing_input.encode('ascii')))}"


def single_proof(values: Sequence[str]) -> str:
    """RFC 9449 §4.3 item 1: the one ``DPoP`` header value among the request's ``values`` (all of them, in order)."""
    if not values:
        raise MissingProofError("a DPoP proof is required (the DPoP header, RFC 9449 §4)")
    if len(values) > 1:
        raise MultipleProofsError("more than one DPoP header (RFC 9449 §4.3)")
    return values[0]


def check_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    now: float,
    leeway: float,
    max_age: float,
    algorithms: Collection[str],
    access_token: str | None = None,
    nonce: str | NonceCheck | None = None,
) -> DpopProof:
    """RFC 9449 §4.3 items 2-12 (see the module docstring) for a request with method ``htm`` to URI ``htu``.

    ``nonce``: the nonce this server provided (a string), or a :class:`NonceCheck` accepting any nonce still
    valid (its ``current()`` goes into the error); None when the server uses no nonces. Raises a
    :class:`~broker.errors.DpopProofError`; run :func:`check_proof_unused` next."""
    compact = parse_proof(proof)
    jti, claimed_htm, claimed_htu, iat = required_claims(compact.payload, ath_required=access_token is not None)
    alg = check_header(compact.header, algorithms)
    jwk = compact.header.get("jwk")
    key = proof_key(jwk, alg)
    verify_proof(compact, alg, key.key)
    check_no_private_key(jwk)  # a dict: proof_key
    check_request(claimed_htm, claimed_htu, method=htm, uri=htu)
    sent_nonce = check_nonce(compact.payload, nonce)
    check_iat(iat, now=now, leeway=leeway, max_age=max_age)
    check_ath(compact.payload, access_token)
    return DpopProof(jti, iat, key.jkt, key.key, alg, claimed_htm, claimed_htu, sent_nonce, key.members)


def check_proof_nonce(proof: str, nonce: str | NonceCheck) -> None:
    """§4.3 item 10 alone, on a proof that is only parsed (not verified): for a server that answers
    ``use_dpop_nonce`` before anything else is checked or spent (§8). Raises a
    :class:`~broker.errors.DpopProofError`; :func:`check_proof` runs every check, this one again included."""
    check_nonce(parse_proof(proof).payload, nonce)


async def check_proof_unused(proof: DpopProof, cache: ReplayCache, *, now: float, window: float) -> None:
    """RFC 9449 §11.1: accept each (key, ``jti``) once. ``window`` is ``max_age + leeway`` of :func:`check_proof`:
    the entry is kept until ``iat + window``, when the proof fails its ``iat`` check anyway.

    Raises :class:`ProofReplayedError` for a replay; :class:`~broker.oauth.replay.ReplayCacheUnavailable`
    propagates (refuse with ``temporarily_unavailable``: fail closed)."""
    key = replay_key(ReplayKind.DPOP_PROOF, proof.jkt, proof.jti)
    until = max(proof.iat + window, now + 1.0)
    added = await cache.add(key, now=datetime.fromtimestamp(now, UTC), expires_at=datetime.fromtimestamp(until, UTC))
    if not added:
        raise ProofReplayedError("DPoP proof was already used (RFC 9449 §11.1)")
