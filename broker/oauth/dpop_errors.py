"""The errors of DPoP proof checking (RFC 9449 §4.3, §8, §11.1), one class per check, each with a ``reason``::

    DpopProofError                         (broker.errors; an OAuthError)
    ├── InvalidDpopProofError              invalid_dpop_proof (RFC 9449 §5 at the token endpoint, §7.1 at an RS)
    │   ├── MissingProofError              §4.3 item 1: no ``DPoP`` header where a proof is required
    │   ├── MultipleProofsError            §4.3 item 1: more than one ``DPoP`` header
    │   ├── MalformedProofError            item 2: not one well-formed JWT of bounded size
    │   ├── MissingClaimError              item 3: a required claim missing or of the wrong JSON type
    │   ├── ProofTypeError                 item 4: ``typ`` is not ``dpop+jwt``
    │   ├── ProofAlgorithmError            item 5: ``alg`` not an allowed asymmetric algorithm
    │   ├── CriticalHeaderError            RFC 7515 §4.1.11: ``crit`` present
    │   ├── ProofKeyError                  item 6: ``jwk`` unusable or unfit for ``alg``
    │   ├── ProofSignatureError            item 6: the signature does not verify
    │   ├── PrivateKeyInProofError         item 7: ``jwk`` holds a private key
    │   ├── HtmMismatchError               item 8
    │   ├── HtuMismatchError               item 9
    │   ├── ProofTooOldError               item 11, §11.1
    │   ├── ProofFromFutureError           item 11, §11.1
    │   ├── AthMismatchError               item 12, §7.1: ``ath`` is not the hash of the access token
    │   ├── KeyBindingMismatchError        item 12, §6.1: the token's ``cnf.jkt`` is another key's
    │   └── ProofReplayedError             §11.1: the (key, ``jti``) pair was used before
    └── UseDpopNonceError                  use_dpop_nonce (§8, §9), ``nonce`` = the fresh nonce (``DPoP-Nonce``)
        ├── MissingNonceError              item 10: no nonce where the server requires one
        └── NonceMismatchError             item 10: not a nonce the server provided, or expired

No message contains the proof, the access token or key material.
"""

from __future__ import annotations

from broker.errors import DpopProofError, InvalidDpopProofError, UseDpopNonceError

__all__ = [
    "AthMismatchError",
    "CriticalHeaderError",
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
]


class MissingProofError(InvalidDpopProofError):
    """§4.3 item 1, §7.1: the request has no ``DPoP`` header where a proof is required."""

    reason = "missing_proof"


class MultipleProofsError(InvalidDpopProofError):
    """§4.3 item 1: the request has more than one ``DPoP`` header."""

    reason = "multiple_proofs"


class MalformedProofError(InvalidDpopProofError):
    """§4.3 item 2: not one well-formed JWT (size, compact JWS, base64url, strict JSON objects)."""

    reason = "malformed_proof"


class MissingClaimError(InvalidDpopProofError):
    """§4.3 item 3: a required claim (§4.2) is missing or has the wrong JSON type."""

    reason = "missing_claim"


class ProofTypeError(InvalidDpopProofError):
    """§4.3 item 4: ``typ`` is not ``dpop+jwt``."""

    reason = "invalid_typ"


class ProofAlgorithmError(InvalidDpopProofError):
    """§4.3 item 5: ``alg`` is not an asymmetric algorithm the server allows."""

    reason = "unsupported_algorithm"


class CriticalHeaderError(InvalidDpopProofError):
    """RFC 7515 §4.1.11: a ``crit`` header names extensions; none is understood here."""

    reason = "critical_header"


class ProofKeyError(InvalidDpopProofError):
    """§4.3 item 6: the ``jwk`` header is not a usable public key for ``alg`` (type, curve, size, its own
    ``alg``/``use``)."""

    reason = "invalid_jwk"


class ProofSignatureError(InvalidDpopProofError):
    """§4.3 item 6: the signature does not verify with the ``jwk`` header's key."""

    reason = "invalid_signature"


class PrivateKeyInProofError(InvalidDpopProofError):
    """§4.3 item 7: the ``jwk`` header contains private key material."""

    reason = "private_key"


class HtmMismatchError(InvalidDpopProofError):
    """§4.3 item 8: ``htm`` is not the request's method."""

    reason = "htm_mismatch"


class HtuMismatchError(InvalidDpopProofError):
    """§4.3 item 9: ``htu`` is not the request's URI (after normalisation, query and fragment ignored)."""

    reason = "htu_mismatch"


class MissingNonceError(UseDpopNonceError):
    """§4.3 item 10, §8: the server requires a nonce and the proof has none (``use_dpop_nonce``)."""

    reason = "missing_nonce"


class NonceMismatchError(UseDpopNonceError):
    """§4.3 item 10, §8: the proof's nonce is not one the server provided, or has expired (``use_dpop_nonce``)."""

    reason = "nonce_mismatch"


class ProofTooOldError(InvalidDpopProofError):
    """§4.3 item 11, §11.1: ``iat`` is earlier than ``now - max_age - leeway``."""

    reason = "proof_too_old"


class ProofFromFutureError(InvalidDpopProofError):
    """§4.3 item 11, §11.1: ``iat`` is later than ``now + leeway``."""

    reason = "proof_from_future"


class AthMismatchError(InvalidDpopProofError):
    """§4.3 item 12, §7.1: ``ath`` is not the hash of the presented access token."""

    reason = "ath_mismatch"


class KeyBindingMismatchError(InvalidDpopProofError):
    """§4.3 item 12, §6.1: the access token is bound (``cnf.jkt``) to another key than the proof's."""

    reason = "jkt_mismatch"


class ProofReplayedError(InvalidDpopProofError):
    """§11.1: a proof with this ``jti`` and key was already accepted within its window."""

    reason = "proof_replayed"
