"""Tests for broker._sealing: AES-256-GCM envelope encryption, KEK files and KEK rotation."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from broker._sealing import KEK_ENV, MAGIC, Kek, KekRing, generate_kek_file
from broker.errors import ConfigError, SealingError

KEK_A = Kek(bytes(range(32)))
KEK_B = Kek(bytes(range(1, 33)))
AAD = b"kid=abc\x00alg=ES256"
SECRET = b"the private key bytes, 48 of them, for the test"


def test_seal_then_unseal_returns_the_plaintext() -> None:
    ring = KekRing(KEK_A)
    assert ring.unseal(ring.seal(SECRET, AAD), AAD, KEK_A.kek_id) == SECRET


def test_each_seal_uses_a_fresh_data_key_and_nonces() -> None:
    ring = KekRing(KEK_A)
    first, second = ring.seal(SECRET, AAD), ring.seal(SECRET, AAD)
    assert first != second
    assert first.startswith(MAGIC) and len(first) == len(SECRET) + 92
    assert SECRET not in first


def test_kek_id_is_16_hex_derived_from_the_key() -> None:
    assert KEK_A.kek_id == Kek(bytes(range(32))).kek_id
    assert KEK_A.kek_id != KEK_B.kek_id
    assert len(KEK_A.kek_id) == 16 and int(KEK_A.kek_id, 16) >= 0


def test_repr_and_str_never_show_the_key() -> None:
    ring = KekRing(KEK_A, [KEK_B])
    shown = repr(KEK_A) + str(KEK_A) + repr(ring) + str(ring)
    for kek in (KEK_A, KEK_B):
        assert kek.encoded() not in shown and kek.key.hex() not in shown and repr(kek.key) not in shown
    assert KEK_A.kek_id in shown


def test_a_changed_aad_is_refused() -> None:
    ring = KekRing(KEK_A)
    blob = ring.seal(SECRET, AAD)
    with pytest.raises(SealingError, match="does not open"):
        ring.unseal(blob, b"kid=other\x00alg=ES256", KEK_A.kek_id)


@pytest.mark.parametrize(
    "offset",
    [0, 3, 4, 15, 16, 40, 63, 64, 75, 76, -1],
    ids=["magic", "version", "wrap-nonce", "wrap-nonce-end", "wrapped-key", "wrapped-key-mid", "wrap-tag",
         "data-nonce", "data-nonce-end", "ciphertext", "data-tag"],
)  # fmt: skip
def test_a_flipped_bit_anywhere_is_refused(offset: int) -> None:
    ring = KekRing(KEK_A)
    blob = bytearray(ring.seal(SECRET, AAD))
    blob[offset] ^= 0x01
    with pytest.raises(SealingError):
        ring.unseal(bytes(blob), AAD, KEK_A.kek_id)


def test_a_truncated_blob_is_refused() -> None:
    ring = KekRing(KEK_A)
    with pytest.raises(SealingError, match="not a sealed record"):
        ring.unseal(ring.seal(SECRET, AAD)[:80], AAD, KEK_A.kek_id)


def test_an_unconfigured_kek_names_what_to_do() -> None:
    blob = KekRing(KEK_A).seal(SECRET, AAD)
    with pytest.raises(SealingError) as caught:
        KekRing(KEK_B).unseal(blob, AAD, KEK_A.kek_id)
    message = str(caught.value)
    assert KEK_A.kek_id in message and KEK_B.kek_id in message
    assert "--kek-file" in message and "previous_kek_files" in message


def test_a_wrong_kek_under_the_right_id_is_refused() -> None:
    blob = KekRing(KEK_A).seal(SECRET, AAD)
    with pytest.raises(SealingError, match="does not open"):
        KekRing(KEK_B).unseal(blob, AAD, KEK_B.kek_id)


def test_rewrap_moves_the_data_key_to_the_primary_and_keeps_the_sealed_data() -> None:
    blob = KekRing(KEK_A).seal(SECRET, AAD)
    rewrapped, kek_id = KekRing(KEK_B, [KEK_A]).rewrap(blob, AAD, KEK_A.kek_id)
    assert kek_id == KEK_B.kek_id
    assert rewrapped[-len(SECRET) - 16 - 12 :] == blob[-len(SECRET) - 16 - 12 :]  # data nonce + ciphertext
    assert KekRing(KEK_B).unseal(rewrapped, AAD, KEK_B.kek_id) == SECRET
    with pytest.raises(SealingError):
        KekRing(KEK_A).unseal(rewrapped, AAD, KEK_A.kek_id)


def test_rewrap_refuses_a_changed_aad() -> None:
    blob = KekRing(KEK_A).seal(SECRET, AAD)
    with pytest.raises(SealingError):
        KekRing(KEK_B, [KEK_A]).rewrap(blob, b"other", KEK_A.kek_id)


def test_generated_kek_file_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "kek"
    kek = generate_kek_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == kek.encoded() + "\n"
    assert Kek.from_file(path) == kek
    assert [p.name for p in path.parent.iterdir()] == ["kek"]


def test_generate_refuses_to_overwrite_a_kek_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    first = generate_kek_file(path)
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_kek_file(path)
    assert Kek.from_file(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["kek"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620], ids=["group-read", "other-read", "group-write"])
def test_a_kek_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    generate_kek_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"mode is {mode:04o}: run chmod 600"):
        Kek.from_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (base64.urlsafe_b64encode(bytes(16)) + b"\n", "a KEK is 32 bytes .*this is 16"),
        (base64.urlsafe_b64encode(bytes(33)) + b"\n", "this is 33"),
        (bytes(32), "base64url text"),
        (b"not base64 at all!\n", "not base64url"),
        (b"", "this is 0"),
    ],
    ids=["short", "long", "raw-bytes", "garbage", "empty"],
)
def test_a_malformed_kek_file_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kek"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=message):
        Kek.from_file(path)


def test_a_missing_kek_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the KEK file"):
        Kek.from_file(tmp_path / "absent")


def test_a_kek_file_through_a_symlink_loads(tmp_path: Path) -> None:
    kek = generate_kek_file(tmp_path / "real")  # a Kubernetes Secret volume mounts files as symlinks
    os.symlink(tmp_path / "real", tmp_path / "kek")
    assert Kek.from_file(tmp_path / "kek") == kek


def test_padded_and_unpadded_base64url_both_load() -> None:
    padded = base64.urlsafe_b64encode(KEK_A.key).decode()
    assert padded.endswith("=") and Kek.from_text(padded, "env") == Kek.from_text(KEK_A.encoded(), "env") == KEK_A


def test_kekring_load_from_the_environment_variable() -> None:
    ring = KekRing.load(None, (), {KEK_ENV: KEK_A.encoded()})
    assert ring.primary == KEK_A


def test_kekring_load_with_previous_kek_files(tmp_path: Path) -> None:
    previous = generate_kek_file(tmp_path / "old")
    primary = generate_kek_file(tmp_path / "new")
    ring = KekRing.load(tmp_path / "new", [tmp_path / "old"], {})
    assert ring.primary == primary and set(ring.kek_ids) == {primary.kek_id, previous.kek_id}


def test_kekring_load_refuses_no_kek_and_two_keks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no key-encryption key: set keyring\.kek_file"):
        KekRing.load(None, (), {})
    generate_kek_file(tmp_path / "kek")
    with pytest.raises(ConfigError, match="keep one"):
        KekRing.load(tmp_path / "kek", (), {KEK_ENV: KEK_A.encoded()})


def test_an_env_kek_error_names_the_variable_not_the_value() -> None:
    value = base64.urlsafe_b64encode(b"x" * 20).decode()
    with pytest.raises(ConfigError) as caught:
        Kek.from_text(value, KEK_ENV)
    assert KEK_ENV in str(caught.value) and value not in str(caught.value)
