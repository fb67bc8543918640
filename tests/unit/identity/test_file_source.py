"""Tests for broker.identity.files: identity from certificate, key and bundle files."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.errors import ConfigError
from broker.identity.errors import SvidUnavailableError
from broker.identity.files import FileSvidSource, SvidFiles
from broker.identity.spiffeid import TrustDomain
from tests.unit.identity.file_identity import BROKER, TD, write_identity


async def test_file_source_serves_svid_and_bundles_from_files(tmp_path: Path) -> None:
    ca, other = DevCA.ephemeral(TD), DevCA.ephemeral("other.org")
    source = FileSvidSource(write_identity(tmp_path, ca, other))
    assert source.x509_svid().spiffe_id == BROKER
    assert set(source.x509_bundles()) == {TD, TrustDomain("other.org")}
    assert source.jwt_bundles()[TD].find(ca.jwt_kid) is not None
    await source.wait_ready(1.0)
    with pytest.raises(SvidUnavailableError):
        await source.fetch_jwt_svid("aud")
    await source.aclose()


def test_file_source_refresh_reloads_changed_files_and_notifies(tmp_path: Path) -> None:
    ca = DevCA.ephemeral(TD)
    source = FileSvidSource(write_identity(tmp_path, ca))
    calls: list[int] = []
    source.subscribe(lambda: calls.append(1))
    first = source.x509_svid()
    assert source.refresh() is False
    write_identity(tmp_path, ca)
    assert source.refresh() is True
    assert calls == [1] and source.x509_svid().leaf != first.leaf


def test_file_source_keeps_last_good_identity_when_files_break(tmp_path: Path) -> None:
    ca = DevCA.ephemeral(TD)
    source = FileSvidSource(write_identity(tmp_path, ca))
    good = source.x509_svid()
    (tmp_path / "key.pem").write_bytes(DevCA.ephemeral(TD).issue_x509_svid(BROKER, ttl=60).key_pem())
    assert source.refresh() is False
    assert source.x509_svid() is good


@pytest.mark.parametrize("problem", ["key-mismatch", "no-own-bundle", "not-a-cert", "missing-file"])
def test_file_source_refuses_unusable_files(tmp_path: Path, problem: str) -> None:
    ca = DevCA.ephemeral(TD)
    files = write_identity(tmp_path, ca)
    if problem == "key-mismatch":
        (tmp_path / "key.pem").write_bytes(ca.issue_x509_svid(BROKER, ttl=60).key_pem())
    elif problem == "no-own-bundle":
        files = SvidFiles(cert=files.cert, key=files.key, x509_bundles={}, jwt_bundles={})
    elif problem == "not-a-cert":
        (tmp_path / "cert.pem").write_text("hello")
    else:
        (tmp_path / "bundle.pem").unlink()
    with pytest.raises(ConfigError) as info:
        FileSvidSource(files)
    assert "PRIVATE KEY" not in info.value.description
