"""API-key secrets at rest (issue 12): what a disk image or a database dump holds is sealed bytes, never a secret.

Each secret is a random canary (``sk_live_CANARY_`` + 32 hex digits), sealed as the registry seals it
(:meth:`KekRing.seal` with :func:`secret_aad` ``(name, version)``: AES-256-GCM under a per-record data key wrapped
by the KEK, NIST SP 800-38D) and stored through the store's own API, then searched for, raw and as the encodings
a file or dump could hold it in (base64 and base64url at every alignment, hex in both cases; PostgreSQL's
``pg_dump`` writes ``bytea`` as hex):

* SQLite: the database file, its ``-wal`` and ``-shm``, while the store is open and after it closed;
* PostgreSQL: a plain ``pg_dump`` of the database.

Each search has a positive control: the same canary written unsealed (a scratch table) is found by the same
search, so the test can fail. Then a KEK rotation: every version re-wrapped under the new KEK opens to the same
bytes, and a ring without the old KEK is a :class:`SealingError` that names the version and changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from broker._sealing import Kek, KekRing
from broker.apikeys.model import secret_aad
from broker.errors import SealingError
from broker.store import Store, open_store
from broker.store.apikey_rewrap import rewrap_apikey_versions
from tests.postgres import USER, PostgresCluster, running_cluster
from tests.unit.store.apikey_helpers import exception
from tests.unit.store.helpers import T0

NAMES = ("stripe-payments", "partner-feed", "mail-relay")


def canary() -> bytes:
    return b"sk_live_CANARY_" + secrets.token_hex(16).encode("ascii")


def forms(secret: bytes) -> dict[str, bytes]:
    """``secret`` as the byte strings a file could hold it as; base64 cores hold only the characters that do not
    depend on the bytes around it, at each of the three alignments."""
    found = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        for alphabet, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            found[f"{alphabet}+{shift}"] = encode(b"\0" * shift + secret)[4:-4]
    return found


def hits(secrets_: list[bytes], data: bytes) -> list[str]:
    """The forms of any of ``secrets_`` found in ``data``: empty means none is there, in any form."""
    return [f"{i}:{form}" for i, s in enumerate(secrets_) for form, needle in forms(s).items() if needle in data]


def sqlite_files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def fill(store: Store, ring: KekRing) -> dict[tuple[str, int], bytes]:
    """One exception per name with version 1, then a rotation to version 2; the canaries by (name, version)."""
    planted: dict[tuple[str, int], bytes] = {}
    for name in NAMES:
        planted[name, 1], planted[name, 2] = canary(), canary()
        kek_id = ring.primary.kek_id
        record = await store.apikeys.add(
            exception(name), ring.seal(planted[name, 1], secret_aad(name, 1)), kek_id, at=T0
        )
        await store.apikeys.rotate(
            name, record.revision, ring.seal(planted[name, 2], secret_aad(name, 2)), kek_id, at=T0
        )
    return planted


async def opened(store: Store, ring: KekRing) -> dict[tuple[str, int], bytes]:
    """Every stored version, unsealed: the store holds what :func:`fill` sealed, under the KEKs it names."""
    versions = await store.apikeys.all_versions()
    return {(v.name, v.version): ring.unseal(v.sealed, secret_aad(v.name, v.version), v.kek_id) for v in versions}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as running:
        yield running


def test_the_search_finds_every_encoding_at_every_alignment() -> None:
    secret = canary()
    for shift in range(3):
        blob = b"\x01" * shift + secret + b"\x02" * 5
        for encoded in (base64.b64encode(blob), base64.urlsafe_b64encode(blob), blob.hex().encode(), blob):
            assert hits([secret], b"prefix" + encoded + b"suffix"), (shift, encoded)
    assert hits([secret], base64.b64encode(os.urandom(4096))) == []


async def test_sqlite_files_hold_no_secret_only_sealed_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ring, path = KekRing(Kek.generate()), tmp_path / "state" / "broker.db"
    store = await open_store(f"sqlite://{path}")
    try:
        planted = await fill(store, ring)
        assert await opened(store, ring) == planted  # the canaries really went in, sealed
        secrets_ = [*planted.values()]
        assert hits(secrets_, sqlite_files(path)) == [], "a secret is readable in the SQLite files (store open)"
        assert hits(secrets_, repr(await store.apikeys.all_versions()).encode()) == []
    finally:
        await store.close()
    assert hits(secrets_, sqlite_files(path)) == [], "a secret is readable in the SQLite files (store closed)"
    assert hits(secrets_, caplog.text.encode()) == []
    with contextlib.closing(sqlite3.connect(path)) as conn:  # positive control: unsealed, the search finds it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE scratch (secret TEXT)")
        conn.execute("INSERT INTO scratch VALUES (?)", (secrets_[3].decode(),))
        conn.commit()
        assert "3:raw" in hits(secrets_, sqlite_files(path))


def pg_dump(cluster: PostgresCluster, dbname: str) -> bytes:
    command = [str(cluster.bin_dir / "pg_dump"), "--host", str(cluster.socket_dir), "--username", USER,
               "--no-password", "--format", "plain", dbname]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": cluster.password}
    result = subprocess.run(command, capture_output=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.postgres
async def test_a_postgresql_dump_holds_no_secret_only_sealed_bytes(cluster: PostgresCluster) -> None:
    ring, dbname = KekRing(Kek.generate()), cluster.create_database()
    store = await open_store(cluster.url(dbname))
    try:
        planted = await fill(store, ring)
        assert await opened(store, ring) == planted
    finally:
        await store.close()
    secrets_ = [*planted.values()]
    dump = pg_dump(cluster, dbname)
    assert b"apikey_versions" in dump and hits(secrets_, dump) == [], "a secret is readable in the pg_dump"
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:  # positive control
        conn.execute("CREATE TABLE scratch (secret text, raw bytea)")
        conn.execute("INSERT INTO scratch VALUES (%s, %s)", (secrets_[0].decode(), secrets_[5]))
    found = hits(secrets_, pg_dump(cluster, dbname))
    assert "0:raw" in found and "5:hex" in found  # text as is, bytea as hex


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_after_a_kek_rotation_every_secret_opens_to_the_same_bytes_and_a_missing_kek_changes_nothing(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old, new, stray = Kek.generate(), Kek.generate(), Kek.generate()
    url = f"sqlite://{tmp_path}/state/broker.db"
    if engine == "postgres":
        running: PostgresCluster = request.getfixturevalue("cluster")
        url = running.url(running.create_database())
    store = await open_store(url)
    try:
        planted = await fill(store, KekRing(old))
        record = await store.apikeys.get("stripe-payments")
        assert record is not None
        planted[("stripe-payments", 3)] = extra = canary()
        sealed = KekRing(stray).seal(extra, secret_aad("stripe-payments", 3))
        await store.apikeys.rotate("stripe-payments", record.revision, sealed, stray.kek_id, at=T0)
        before = await store.apikeys.all_versions()
        missing = r"'stripe-payments' version 3: sealed with KEK \w+, which is not configured"
        with pytest.raises(SealingError, match=missing) as caught:
            await rewrap_apikey_versions(store.apikeys, KekRing(new, [old]))  # the others open: none is written
        assert "nothing was changed" in caught.value.description
        assert hits([*planted.values()], str(caught.value).encode()) == []
        assert await store.apikeys.all_versions() == before
        rotating = KekRing(new, [old, stray])
        assert await rewrap_apikey_versions(store.apikeys, rotating) == len(planted) == 7
        assert {v.kek_id for v in await store.apikeys.all_versions()} == {new.kek_id}
        assert await opened(store, KekRing(new)) == planted  # the same bytes; the old KEKs are no longer needed
        assert await rewrap_apikey_versions(store.apikeys, rotating) == 0  # idempotent
    finally:
        await store.close()
