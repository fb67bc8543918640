"""JWS in compact serialization (RFC 7515, RFC 7518 §3): the public facade.

Two ways in, and only two:

* verified: :func:`parse_compact`, then :func:`verify` with the key the caller chose from the header (and, for a
  JWT-SVID, from ``sub``); nothing in the token is trusted before :func:`verify` returns;
* unverified, for bookkeeping only: :func:`read_unverified` (the sidecar reading the ``cnf`` and ``exp`` of the
  token it was just issued, the app client reading the binding, the Workload API client reading a JWT-SVID's
  ``exp``). Never use it to accept a token from a peer.

The staged pieces (:func:`split_compact`, :func:`b64url_decode`, :func:`json_object`) are there for validators
that must check in their own order (the JWT-SVID checks of :mod:`broker.identity.jwtsvid`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.jose._rfc7515 import (
    MAX_TOKEN_LENGTH,
    CompactJws,
    CompactParts,
    b64url_decode,
    b64url_encode,
    json_object,
    parse_compact,
    split_compact,
)
from broker.jose._rfc7518 import ALGORITHMS, ES_ALGORITHMS, der_to_raw, raw_to_der, verify_signature

__all__ = [
    "ALGORITHMS",
    "ES_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "CompactJws",
    "CompactParts",
    "b64url_decode",
    "b64url_encode",
    "der_to_raw",
    "json_object",
    "parse_compact",
    "raw_to_der",
    "read_unverified",
    "split_compact",
    "verify",
    "verify_signature",
]


def verify(jws: CompactJws, alg: str, key: PublicKeyTypes) -> None:
    """Verify ``jws``'s signature with ``key`` for ``alg`` (RFC 7515 §5.2 step 8); raise a ``JoseError``."""
    verify_signature(alg, key, jws.signing_input, jws.signature)


def read_unverified(token: str, *, canonical: bool = True) -> CompactJws:
    """The header and payload of ``token`` *without* checking its signature: bookkeeping only (see above)."""
    return parse_compact(token, canonical=canonical)
