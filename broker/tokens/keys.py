"""The token service's signing keys: ES256 (RFC 7518 §3.4), ``kid`` = RFC 7638 JWK thumbprint.

A :class:`KeyStore` holds one active key (signs new tokens) and every key still published in the JWKS (the
active one plus, after :meth:`FileKeyStore.rotate`, the previous one so tokens it signed keep verifying).
The server's key store is :class:`broker.tokens.keyring.Keyring` (keys in the state store, sealed).
:class:`FileKeyStore` is the earlier one: PKCS#8 PEM files with mode 0600 in a 0700 state directory, generated on
first start; it refuses a key file that others can read. The keyring imports its files once
(:func:`import_legacy_keys`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker._files import private_dir, write_private_file
from broker.errors import ConfigError
from broker.jose import thumbprint
from broker.jose.jwk import ec_public_jwk
from broker.jose.jws import b64url_encode as b64url
from broker.jose.jws import der_to_raw

__all__ = [
    "FileKeyStore",
    "InMemoryKeyStore",
    "KeyStore",
    "SigningKey",
    "b64url",
    "import_legacy_keys",
    "jwks",
    "load_key_file",
]

ALGORITHM = "ES256"
ACTIVE_KEY_FILE = "token-signing-key.pem"
PREVIOUS_KEY_FILE = "token-signing-key.previous.pem"


@dataclass(frozen=True)
class SigningKey:
    """A P-256 private key and its RFC 7638 thumbprint (used as ``kid``)."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    kid: str

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_private_key(cls, key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError("token signing key must be a P-256 key (ES256)")
        return cls(private_key=key, kid=thumbprint(ec_public_jwk(key.public_key())))

    def public_jwk(self) -> dict[str, str]:
        """RFC 7517 public JWK with ``kid``, ``use: sig`` and ``alg: ES256``."""
        return {**ec_public_jwk(self.private_key.public_key()), "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def sign(self, signing_input: bytes) -> bytes:
        """RFC 7518 §3.4: ECDSA P-256 SHA-256, signature as the 64-byte ``R || S``."""
        return der_to_raw(self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())), 32)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def jwks(keys: Sequence[SigningKey]) -> dict[str, Any]:
    """RFC 7517 §5 JWK Set of the public halves of ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


class KeyStore(Protocol):
    """The active signing key and every key to publish."""

    def active_key(self) -> SigningKey: ...

    def published_keys(self) -> Sequence[SigningKey]: ...


class InMemoryKeyStore:
    """A key generated in memory (tests, ``spiffe-broker dev`` without a state directory)."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self._key = key or SigningKey.generate()

    def active_key(self) -> SigningKey:
        return self._key

    def published_keys(self) -> Sequence[SigningKey]:
        return (self._key,)


class FileKeyStore:
    """Keys kept in ``state_dir`` (0700) as 0600 PEM files; generated on first start, loaded on restart."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        private_dir(state_dir)
        active_path = state_dir / ACTIVE_KEY_FILE
        if active_path.exists():
            self._active = load_key_file(active_path)
        else:
            self._active = SigningKey.generate()
            write_private_file(active_path, self._active.to_pem())
        previous_path = state_dir / PREVIOUS_KEY_FILE
        self._previous = load_key_file(previous_path) if previous_path.exists() else None

    def active_key(self) -> SigningKey:
        return self._active

    def published_keys(self) -> Sequence[SigningKey]:
        return (self._active,) if self._previous is None else (self._active, self._previous)

    def rotate(self) -> SigningKey:
        """Make a new active key; the old one stays published (as the previous key) until the next rotation."""
        new = SigningKey.generate()
        write_private_file(self.state_dir / PREVIOUS_KEY_FILE, self._active.to_pem())
        write_private_file(self.state_dir / ACTIVE_KEY_FILE, new.to_pem())
        self._previous, self._active = self._active, new
        return new


def import_legacy_keys(state_dir: Path) -> tuple[SigningKey, SigningKey | None] | None:
    """The keys :class:`FileKeyStore` left in ``state_dir`` (active, previous), or None if there is no active file;
    the keyring imports them once into an empty store."""
    active_path = state_dir / ACTIVE_KEY_FILE
    if not active_path.exists():
        return None
    previous_path = state_dir / PREVIOUS_KEY_FILE
    return load_key_file(active_path), load_key_file(previous_path) if previous_path.exists() else None


def load_key_file(path: Path) -> SigningKey:
    """Load a PEM key, refusing a file that group or others can access (like ssh does)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open signing key: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise ConfigError(f"{path}: signing key must be a regular file with mode 0600")
        data = handle.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: signing key must be an EC P-256 key")
    return SigningKey.from_private_key(key)
