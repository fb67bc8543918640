"""Server-provided DPoP nonces (RFC 9449 §8 at the token endpoint, §9 at a resource server), without storage.

A nonce names a time bucket and proves the server made it::

    nonce = base64url( bucket (8 bytes, big-endian) || HMAC-SHA256(secret, "dpop-nonce" || bucket)[:16] )

with ``bucket = floor(now / lifetime)``. :meth:`NonceSource.check` accepts the current and the previous bucket,
so a nonce lives between ``lifetime`` and ``2 * lifetime`` seconds, every replica configured with the same secret
accepts every other's nonces, and nothing is stored (§8: the nonce is opaque to the client; §11.1: it bounds the
proof's age from the server's own clock). The MAC is compared in constant time. The secret comes from the caller
(at least 32 random bytes; tests use ``secrets.token_bytes(32)``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable

from broker.jose._rfc7515 import b64url_decode, b64url_encode
from broker.jose.errors import Base64urlError

__all__ = ["DEFAULT_NONCE_LIFETIME", "MIN_SECRET_BYTES", "NonceSource"]

DEFAULT_NONCE_LIFETIME = 60.0
MIN_SECRET_BYTES = 32
_LABEL = b"dpop-nonce"
_BUCKET_BYTES = 8
_MAC_BYTES = 16
_NONCE_LENGTH = 32  # base64url of 24 bytes


class NonceSource:
    """Stateless, HMAC-based, time-bucketed nonces (see the module docstring)."""

    def __init__(
        self,
        secret: bytes,
        *,
        lifetime: float = DEFAULT_NONCE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the nonce secret must be at least {MIN_SECRET_BYTES} bytes")
        if not math.isfinite(lifetime) or lifetime <= 0:
            raise ValueError("lifetime must be a positive number of seconds")
        self._secret = secret
        self._lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:  # never the secret
        return f"NonceSource(lifetime={self._lifetime})"

    def _bucket(self) -> int:
        return math.floor(self._clock() / self._lifetime)

    def _mac(self, bucket_bytes: bytes) -> bytes:
        return hmac.new(self._secret, _LABEL + bucket_bytes, hashlib.sha256).digest()[:_MAC_BYTES]

    def current(self) -> str:
        """The nonce of the current bucket (the same on every replica sharing the secret)."""
        bucket_bytes = self._bucket().to_bytes(_BUCKET_BYTES, "big", signed=True)
        return b64url_encode(bucket_bytes + self._mac(bucket_bytes))

    def check(self, nonce: str) -> bool:
        """Whether ``nonce`` was made with this secret in the current or the previous bucket."""
        if not isinstance(nonce, str) or len(nonce) != _NONCE_LENGTH:
            return False
        try:
            raw = b64url_decode(nonce)
        except Base64urlError:
            return False
        bucket_bytes, mac = raw[:_BUCKET_BYTES], raw[_BUCKET_BYTES:]
        if int.from_bytes(bucket_bytes, "big", signed=True) - self._bucket() not in (0, -1):
            return False
        return hmac.compare_digest(mac, self._mac(bucket_bytes))
