"""The store never holds a private signing key in the clear (issue 9 acceptance).

After keys are generated, rotated, revoked and re-wrapped under a new KEK, the SQLite file and its ``-wal``, and a
PostgreSQL ``pg_dump`` and the database's files, are searched for every private key the keyring used, in each form
it could take: the raw scalar (also as hex, as a plain dump prints ``bytea``, and as the JWK ``d`` member), PKCS#8
DER (raw, hex, base64), SEC1 DER, PKCS#8 PEM and each PEM line. Positive control: the same search, on a store into
which a key was planted in the clear, finds it.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import psycopg
from cryptography.hazmat.primitives import serialization

from broker._sealing import KekRing
from broker.store import Store, open_store
from broker.testing import ManualClock
from broker.tokens.keyring import rotate_kek
from broker.tokens.keys import SigningKey
from broker.tokens.keystore import KeyringChange, KeyState
from broker.tokens.sealed_keys import seal_key
from tests.postgres import USER, PostgresCluster
from tests.unit.tokens.keyring_helpers import KEK_1, KEK_2, PERIOD, RETIRE_AFTER, at, open_keyring

T = TypeVar("T")


def clear_forms(key: SigningKey) -> dict[str, bytes]:
    private = key.private_key
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    none = serialization.NoEncryption()
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, none)
    sec1 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, none)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, none)
    forms = {
        "raw scalar": scalar,
        "raw scalar, hex": scalar.hex().encode(),
        "JWK d": base64.urlsafe_b64encode(scalar).rstrip(b"="),
        "PKCS#8 DER": pkcs8,
        "PKCS#8 DER, hex": pkcs8.hex().encode(),
        "PKCS#8 DER, base64": base64.b64encode(pkcs8),
        "SEC1 DER": sec1,
        "PKCS#8 PEM": pem,
    }
    forms.update({f"PEM line {i}": line for i, line in enumerate(pem.splitlines()[1:-1], 1)})
    return forms


def found(haystacks: Iterable[bytes], keys: Iterable[SigningKey]) -> set[tuple[str, str]]:
    """(kid, form) for every form of every key found in any haystack."""
    hits: set[tuple[str, str]] = set()
    for haystack in haystacks:
        for key in keys:
            hits |= {(key.kid, name) for name, form in clear_forms(key).items() if form in haystack}
    return hits


async def exercise(store: Store, clock: ManualClock) -> set[SigningKey]:
    """Generate, rotate twice, retire, revoke, re-wrap under a new KEK; every private key the keyring used."""
    used: set[SigningKey] = set()
    keyring = await open_keyring(store.keyring, clock)
    used |= set(keyring.published_keys())
    for _ in range(2):
        clock.advance(PERIOD)
        await keyring.tick()
        used |= set(keyring.published_keys())
    clock.advance(RETIRE_AFTER)
    await keyring.tick()
    await keyring.revoke(keyring.active_key().kid)
    used |= set(keyring.published_keys())
    await rotate_kek(store.keyring, KekRing(KEK_2, [KEK_1]))
    assert len(used) >= 5 and len({k.kid for k in used}) == len(used)
    return used


async def plant_in_the_clear(store: Store, clock: ManualClock) -> SigningKey:
    """A key stored the way it must never be: its DER as the 'wrapped' bytes, its PEM as text."""
    key = SigningKey.generate()
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sealed = seal_key(KekRing(KEK_1), key, KeyState.NEXT, at(clock))
    planted = replace(sealed, wrapped_key=der, public_jwk=pem.decode())
    assert await store.keyring.apply(KeyringChange(at=at(clock), adds=(planted,)))
    return key


def sqlite_files(db: Path) -> Iterator[bytes]:
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            yield path.read_bytes()


async def test_sqlite_file_and_wal_never_hold_a_private_key(tmp_path: Path) -> None:
    db = tmp_path / "state" / "broker.db"
    store = await open_store(f"sqlite://{db}")
    try:
        used = await exercise(store, ManualClock())
        assert db.with_name("broker.db-wal").stat().st_size > 0  # the WAL is searched while it holds the writes
        assert found(sqlite_files(db), used) == set()
    finally:
        await store.close()
    assert found(sqlite_files(db), used) == set()


async def test_positive_control_the_sqlite_search_finds_a_planted_key(tmp_path: Path) -> None:
    db = tmp_path / "state" / "broker.db"
    store = await open_store(f"sqlite://{db}")
    try:
        planted = await plant_in_the_clear(store, ManualClock())
        hits = {form for _, form in found(sqlite_files(db), [planted])}
    finally:
        await store.close()
    assert {"raw scalar", "PKCS#8 DER", "PKCS#8 PEM", "PEM line 1"} <= hits


def pg_dump(cluster: PostgresCluster, dbname: str) -> bytes:
    result = subprocess.run(
        [str(cluster.bin_dir / "pg_dump"), "-h", str(cluster.socket_dir), "-U", USER, "-d", dbname, "-w"],
        env={**os.environ, "PGPASSWORD": cluster.password},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"signing_keys" in result.stdout
    return result.stdout


def pg_files(cluster: PostgresCluster, dbname: str) -> Iterator[bytes]:
    """The database's own files and the write-ahead log, after a checkpoint."""
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    assert row is not None
    for directory in (cluster.data / "base" / str(row[0]), cluster.data / "pg_wal"):
        for path in directory.iterdir():
            if path.is_file():
                yield path.read_bytes()


async def on_postgres(cluster: PostgresCluster, work: Callable[[Store, ManualClock], Awaitable[T]]) -> tuple[str, T]:
    """Run ``work`` on a store in a new database of ``cluster``; the database's name and what ``work`` returned."""
    dbname = cluster.create_database()
    store = await open_store(cluster.url(dbname))
    try:
        return dbname, await work(store, ManualClock())
    finally:
        await store.close()


async def test_postgres_dump_and_files_never_hold_a_private_key(postgres_cluster: PostgresCluster) -> None:
    dbname, used = await on_postgres(postgres_cluster, exercise)
    assert found([pg_dump(postgres_cluster, dbname)], used) == set()
    assert found(pg_files(postgres_cluster, dbname), used) == set()


async def test_positive_control_the_postgres_search_finds_a_planted_key(postgres_cluster: PostgresCluster) -> None:
    dbname, planted = await on_postgres(postgres_cluster, plant_in_the_clear)
    in_dump = {form for _, form in found([pg_dump(postgres_cluster, dbname)], [planted])}
    assert {"raw scalar, hex", "PKCS#8 DER, hex", "PEM line 1", "PEM line 2"} <= in_dump
    in_files = {form for _, form in found(pg_files(postgres_cluster, dbname), [planted])}
    assert {"raw scalar", "PKCS#8 DER"} <= in_files
