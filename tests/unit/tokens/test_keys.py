"""Tests for broker.tokens.keys: ES256 signing keys, RFC 7638 kids, JWKS and the file key store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.jwk import ECKey

from broker.errors import ConfigError
from broker.tokens.keys import (
    ACTIVE_KEY_FILE,
    PREVIOUS_KEY_FILE,
    FileKeyStore,
    InMemoryKeyStore,
    SigningKey,
    jwks,
)


def test_thumbprint_matches_rfc7638_computed_by_joserfc() -> None:
    key = SigningKey.generate()
    assert key.kid == ECKey.import_key(key.private_key.public_key()).thumbprint()


def test_sign_produces_raw_r_s_signature_that_verifies() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"payload")
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.private_key.public_key().verify(der, b"payload", ec.ECDSA(hashes.SHA256()))


def test_public_jwk_has_no_private_member_and_declares_es256() -> None:
    jwk = SigningKey.generate().public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert (jwk["alg"], jwk["use"], jwk["crv"]) == ("ES256", "sig", "P-256")


def test_jwks_lists_every_published_key() -> None:
    keys = [SigningKey.generate(), SigningKey.generate()]
    document = jwks(keys)
    assert [k["kid"] for k in document["keys"]] == [k.kid for k in keys]
    assert all("d" not in key for key in document["keys"])
    assert "PRIVATE" not in json.dumps(document)


def test_signing_key_repr_hides_private_key() -> None:
    key = SigningKey.generate()
    assert "private" not in repr(key) and "BEGIN" not in repr(key)


def test_signing_key_refuses_other_curves() -> None:
    with pytest.raises(ConfigError):
        SigningKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))


def test_file_key_store_creates_0600_key_in_0700_dir_and_reloads_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = FileKeyStore(state)
    path = state / ACTIVE_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    content = path.read_bytes()
    second = FileKeyStore(state)
    assert second.active_key().kid == first.active_key().kid
    assert path.read_bytes() == content


def test_file_key_store_rotation_keeps_previous_key_published(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    old = store.active_key()
    new = store.rotate()
    assert store.active_key() == new
    assert [k.kid for k in store.published_keys()] == [new.kid, old.kid]
    assert stat.S_IMODE(os.stat(tmp_path / PREVIOUS_KEY_FILE).st_mode) == 0o600
    reloaded = FileKeyStore(tmp_path)
    assert [k.kid for k in reloaded.published_keys()] == [new.kid, old.kid]


def test_file_key_store_refuses_key_readable_by_others(tmp_path: Path) -> None:
    FileKeyStore(tmp_path)
    os.chmod(tmp_path / ACTIVE_KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        FileKeyStore(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["garbage", "bad-pem"],
)
def test_file_key_store_refuses_unreadable_key_without_echoing_it(tmp_path: Path, content: bytes) -> None:
    fd = os.open(tmp_path / ACTIVE_KEY_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(ConfigError) as info:
        FileKeyStore(tmp_path)
    assert "AAAA" not in info.value.description and "not a key" not in info.value.description


def test_in_memory_key_store_publishes_its_active_key() -> None:
    store = InMemoryKeyStore()
    assert list(store.published_keys()) == [store.active_key()]
