"""Envelope encryption at rest: AES-256-GCM data keys wrapped by a key-encryption key (KEK).

Each record gets its own random 256-bit data key; the plaintext is sealed under it with AES-256-GCM (NIST SP
800-38D; a random 96-bit nonce, §8.2.2, safe because each data key seals exactly one message), and the data key is
sealed ("wrapped") under the KEK, again with AES-256-GCM. The caller's associated data (``aad``) is authenticated
by both layers, so a sealed blob moved to another record (another kid, another API key) does not open. Only the
data key is re-sealed by :meth:`KekRing.rewrap`: KEK rotation never touches the plaintext.

The blob, version 1 (92 bytes of overhead)::

    magic "SBS" | version 0x01 | wrap nonce (12) | wrapped data key (32 + 16 tag) | data nonce (12) | ciphertext+tag

The wrap is authenticated with ``"SBS1 wrap" | kek_id | aad``, the data with ``"SBS1 data" | aad``.

A KEK is 32 random bytes. Its ``kek_id`` is the first 16 hex digits of SHA-256 over a fixed label and the key:
a name for logs and the store's ``kek_id`` column that reveals nothing usable about the key. A KEK file holds the
key as base64url (RFC 4648 §5, with or without ``=`` padding) and one newline, the same text as the
``SPIFFE_BROKER_KEK`` environment variable; the file must be readable by its owner only (no group or other bits).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker._files import private_dir
from broker.errors import ConfigError, SealingError

__all__ = ["KEK_ENV", "KEY_BYTES", "Kek", "KekRing", "generate_kek_file"]

KEK_ENV = "SPIFFE_BROKER_KEK"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAGIC = b"SBS\x01"
_WRAPPED_BYTES = KEY_BYTES + TAG_BYTES
_HEADER_BYTES = len(MAGIC) + NONCE_BYTES + _WRAPPED_BYTES + NONCE_BYTES
_KEK_ID_LABEL = b"spiffe-broker kek-id v1\x00"


@dataclass(frozen=True, slots=True)
class Kek:
    """A 256-bit key-encryption key. Its repr and str show only :attr:`kek_id`."""

    key: bytes = field(repr=False)
    kek_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ConfigError(f"a KEK is {KEY_BYTES} bytes, not {len(self.key)}: make one with keys init-kek")
        digest = hashlib.sha256(_KEK_ID_LABEL + self.key).hexdigest()
        object.__setattr__(self, "kek_id", digest[:16])

    @classmethod
    def generate(cls) -> Kek:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str) -> Kek:
        """The KEK from base64url text (a file's content or the env variable); ``source`` names it in errors."""
        encoded = text.strip()
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: not base64url text: make a KEK with keys init-kek") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{source}: a KEK is {KEY_BYTES} bytes (base64url), this is {len(key)}: make one with keys init-kek"
            )
        return cls(key)

    @classmethod
    def from_file(cls, path: Path) -> Kek:
        """Load a KEK file, refusing one that group or others may access (like ssh does with private keys)."""
        try:
            with path.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    raise ConfigError(f"{path}: a KEK file must be a regular file")
                if mode & 0o077:
                    raise ConfigError(f"{path}: KEK file mode is {mode & 0o777:04o}: run chmod 600 {path}")
                data = handle.read(256)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the KEK file: {exc.strerror}") from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: a KEK file holds base64url text: make one with keys init-kek") from None
        return cls.from_text(text, str(path))

    def encoded(self) -> str:
        """The base64url text of the key (for a new KEK file or a Kubernetes Secret); never log it."""
        return base64.urlsafe_b64encode(self.key).decode("ascii").rstrip("=")

    def __str__(self) -> str:
        return f"KEK {self.kek_id}"


def generate_kek_file(path: Path) -> Kek:
    """Write a new KEK to ``path`` (mode 0600, parents 0700), atomically; refuses to replace an existing file."""
    kek = Kek.generate()
    private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (kek.encoded() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # link(2) fails with EEXIST: never replaces a KEK
        except FileExistsError:
            raise ConfigError(f"{path}: a file is already there; a KEK file is never overwritten") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return kek


class KekRing:
    """The primary KEK (seals and re-wraps) and previous KEKs (accepted for unsealing only, during KEK rotation)."""

    def __init__(self, primary: Kek, previous: Sequence[Kek] = ()) -> None:
        self.primary = primary
        self._by_id = {kek.kek_id: kek for kek in (*previous, primary)}

    @property
    def kek_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    @classmethod
    def load(cls, kek_file: Path | None, previous_files: Sequence[Path], environ: Mapping[str, str]) -> KekRing:
        """The KEKs configuration names: ``kek_file`` or ``$SPIFFE_BROKER_KEK`` (exactly one), and previous ones."""
        from_env = environ.get(KEK_ENV)
        if kek_file is not None and from_env:
            raise ConfigError(f"both keyring.kek_file and {KEK_ENV} are set: keep one")
        if kek_file is not None:
            primary = Kek.from_file(kek_file)
        elif from_env:
            primary = Kek.from_text(from_env, KEK_ENV)
        else:
            raise ConfigError(
                f"no key-encryption key: set keyring.kek_file (--kek-file) or {KEK_ENV}; "
                "make one with spiffe-broker keys init-kek PATH"
            )
        return cls(primary, [Kek.from_file(path) for path in previous_files])

    def __repr__(self) -> str:
        return f"KekRing(primary={self.primary.kek_id!r}, kek_ids={self.kek_ids!r})"

    def derive(self, label: bytes, length: int = 32) -> bytes:
        """A secret every replica with the same primary KEK derives alike, one per ``label`` (HKDF-SHA256, RFC 5869;
        the KEK itself never leaves this object). Used for the DPoP nonce key (RFC 9449 §8)."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"spiffe-broker " + label).derive(
            self.primary.key
        )

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Seal ``plaintext`` under a fresh data key wrapped by the primary KEK; unseal with the same ``aad``."""
        data_key = AESGCM.generate_key(bit_length=256)
        data_nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(data_key).encrypt(data_nonce, plaintext, _data_aad(aad))
        return _wrap(self.primary, data_key, aad) + data_nonce + sealed

    def unseal(self, blob: bytes, aad: bytes, kek_id: str) -> bytes:
        """The plaintext of ``blob``; :class:`SealingError` for an unknown KEK, a wrong ``aad`` or a changed blob."""
        data_key = self._unwrap(blob, aad, kek_id)
        data_nonce = blob[_HEADER_BYTES - NONCE_BYTES : _HEADER_BYTES]
        try:
            return AESGCM(data_key).decrypt(data_nonce, blob[_HEADER_BYTES:], _data_aad(aad))
        except InvalidTag:
            raise SealingError(_damaged(kek_id)) from None

    def rewrap(self, blob: bytes, aad: bytes, kek_id: str) -> tuple[bytes, str]:
        """``blob`` with its data key wrapped by the primary KEK instead (the sealed data unchanged); the new id."""
        data_key = self._unwrap(blob, aad, kek_id)
        return _wrap(self.primary, data_key, aad) + blob[_HEADER_BYTES - NONCE_BYTES :], self.primary.kek_id

    def _unwrap(self, blob: bytes, aad: bytes, kek_id: str) -> bytes:
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise SealingError(
                f"sealed with KEK {kek_id}, which is not configured (have {', '.join(self.kek_ids)}): "
                "pass the KEK file it was sealed with (--kek-file), or add it to keyring.previous_kek_files"
            )
        if len(blob) < _HEADER_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
            raise SealingError(f"not a sealed record (format {MAGIC[:3]!r} v1); the stored record is damaged")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        wrapped = blob[len(MAGIC) + NONCE_BYTES : len(MAGIC) + NONCE_BYTES + _WRAPPED_BYTES]
        try:
            return AESGCM(kek.key).decrypt(nonce, wrapped, _wrap_aad(kek_id, aad))
        except InvalidTag:
            raise SealingError(_damaged(kek_id)) from None


def _wrap(kek: Kek, data_key: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(kek.key).encrypt(nonce, data_key, _wrap_aad(kek.kek_id, aad))


def _wrap_aad(kek_id: str, aad: bytes) -> bytes:
    return b"SBS1 wrap\x00" + kek_id.encode("ascii") + b"\x00" + aad


def _data_aad(aad: bytes) -> bytes:
    return b"SBS1 data\x00" + aad


def _damaged(kek_id: str) -> str:
    return (
        f"a record sealed with KEK {kek_id} does not open: the record was changed or moved to another row, "
        "or a different key was given the same id; restore the record from a backup"
    )
