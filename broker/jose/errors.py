"""The errors of the JOSE core, drawn once (joserfc's shape: one base, a machine-readable ``error`` per class)::

    JoseError                              (a BrokerError)
    ├── MalformedJwsError                  not a JWS in compact serialization (RFC 7515 §7.1)
    │   ├── TokenTooLongError              longer than the parser's bound
    │   ├── Base64urlError                 a part is not (canonical) unpadded base64url (RFC 7515 §2)
    │   └── JsonObjectError                header or payload is not a strict UTF-8 JSON object (RFC 7515 §5.2)
    ├── UnsupportedAlgorithmError          ``alg`` is not in the table (RFC 7518 §3.1)
    ├── KeyAlgorithmMismatchError          the key's type or curve does not fit ``alg`` (RFC 7518 §3)
    ├── WeakKeyError                       an RSA key shorter than 2048 bits (RFC 7518 §3.3, §3.5)
    ├── BadSignatureError                  the signature does not verify, or has the wrong length (RFC 7515 §5.2)
    └── InvalidJwkError                    a JWK is not a usable public key (RFC 7517 §4, RFC 7518 §6)
        └── SymmetricKeyError              ... because it is a symmetric (``oct``) key

Callers map these to their own layer's errors (the JWT-SVID checks, the access-token verifier); no message here
ever contains a token or a key.
"""

from __future__ import annotations

from broker.errors import BrokerError

__all__ = [
    "BadSignatureError",
    "Base64urlError",
    "InvalidJwkError",
    "JoseError",
    "JsonObjectError",
    "KeyAlgorithmMismatchError",
    "MalformedJwsError",
    "SymmetricKeyError",
    "TokenTooLongError",
    "UnsupportedAlgorithmError",
    "WeakKeyError",
]


class JoseError(BrokerError):
    """Base of the JOSE core's errors."""

    error = "jose_error"


class MalformedJwsError(JoseError):
    """Not three non-empty base64url parts (RFC 7515 §7.1); JWE and the JSON serialization included."""

    error = "malformed_jws"


class TokenTooLongError(MalformedJwsError):
    """The token is longer than the parser accepts."""

    error = "token_too_long"


class Base64urlError(MalformedJwsError):
    """A part is not unpadded base64url, or (when canonical spelling is required) not its canonical spelling."""

    error = "bad_base64url"


class JsonObjectError(MalformedJwsError):
    """``part`` (``header`` or ``payload``) is not a strict JSON object.

    ``problem`` says why in a few words (``not UTF-8 JSON``, ``not a JSON object``); ``duplicate`` is set when
    the object has a member twice (RFC 7515 §5.2 step 4, RFC 7519 §4).
    """

    error = "bad_json"

    def __init__(self, part: str, problem: str, *, duplicate: bool = False) -> None:
        super().__init__(f"{part} has a duplicate member" if duplicate else f"{part} is {problem}")
        self.part = part
        self.problem = problem
        self.duplicate = duplicate


class UnsupportedAlgorithmError(JoseError):
    """``alg`` missing or not one of RS/PS/ES 256/384/512."""

    error = "unsupported_algorithm"


class KeyAlgorithmMismatchError(JoseError):
    """The key's type or curve does not fit ``alg``."""

    error = "key_algorithm_mismatch"


class WeakKeyError(JoseError):
    """An RSA key shorter than 2048 bits."""

    error = "weak_key"


class BadSignatureError(JoseError):
    """The signature does not verify (or has the wrong length or encoding)."""

    error = "invalid_signature"


class InvalidJwkError(JoseError):
    """A JWK that is not a usable public key."""

    error = "invalid_jwk"


class SymmetricKeyError(InvalidJwkError):
    """A JWK that holds a symmetric key where a public key is required."""

    error = "symmetric_key"
