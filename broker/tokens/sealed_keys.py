"""Signing keys sealed for the store (:mod:`broker._sealing`): what the associated data binds, and the checks on
opening.

The associated data is ``"spiffe-broker signing key v1" | kid | algorithm``: the record format version, the key id
and the algorithm. A wrapped key copied to another kid's row, or relabelled with another algorithm, does not open.
The sealed plaintext is the key's PKCS#8 DER (RFC 5208); after opening, its RFC 7638 thumbprint must be the kid.
"""

from __future__ import annotations

import json
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker._sealing import KekRing
from broker.errors import SealingError
from broker.tokens.keys import ALGORITHM, SigningKey
from broker.tokens.keystore import KeyRecord, KeyState

__all__ = ["key_aad", "seal_key", "unseal_key"]


def key_aad(kid: str, algorithm: str) -> bytes:
    """The associated data a signing key is sealed with: format version, kid and algorithm."""
    return b"spiffe-broker signing key v1\x00" + kid.encode() + b"\x00" + algorithm.encode()


def seal_key(keks: KekRing, key: SigningKey, state: KeyState, at: datetime) -> KeyRecord:
    """A store record for ``key`` in ``state`` created at ``at`` (and activated or retiring then, per state)."""
    der = key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyRecord(
        kid=key.kid,
        algorithm=ALGORITHM,
        state=state,
        wrapped_key=keks.seal(der, key_aad(key.kid, ALGORITHM)),
        kek_id=keks.primary.kek_id,
        public_jwk=json.dumps(key.public_jwk(), sort_keys=True, separators=(",", ":")),
        created_at=at,
        activated_at=at if state is KeyState.ACTIVE else None,
        retiring_at=at if state is KeyState.RETIRING else None,
    )


def unseal_key(keks: KekRing, record: KeyRecord) -> SigningKey:
    """The signing key ``record`` holds; :class:`SealingError` (naming the kid) if it does not open or match."""
    if record.algorithm != ALGORITHM:
        raise SealingError(f"signing key {record.kid}: algorithm {record.algorithm!r} is not {ALGORITHM}")
    try:
        der = keks.unseal(record.wrapped_key, key_aad(record.kid, record.algorithm), record.kek_id)
    except SealingError as exc:
        raise SealingError(f"signing key {record.kid}: {exc.description}") from None
    try:
        private = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        private = None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise SealingError(f"signing key {record.kid}: the sealed data is not a P-256 private key")
    key = SigningKey.from_private_key(private)
    if key.kid != record.kid:
        raise SealingError(f"signing key {record.kid}: the sealed key's thumbprint is {key.kid}, not its kid")
    return key
