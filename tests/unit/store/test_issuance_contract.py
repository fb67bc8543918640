"""The token endpoint's batches (``Store.record_issuance``): ledger rows and audit records in one transaction, on
memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.audit.journal import GENESIS_HASH, Stamped, epoch_micros
from broker.audit.verify import verify_journal
from broker.store import Store, open_store
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore
from broker.tokens.ledger import LedgerRow
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

BINDING = "x5t#S256=" + "A" * 43
IAT = int(T0.timestamp())
AT = epoch_micros(T0)


def row(jti: str, *, kid: str = "k1", sub: str = "web", aud: tuple[str, ...] = ("https://api",),
        scope: tuple[str, ...] = ("read",), iat: int = IAT, lifetime: int = 300) -> LedgerRow:  # fmt: skip
    return (jti, kid, f"spiffe://example.org/{sub}", aud, scope, BINDING, iat, iat + lifetime)


def stamped(i: int, event: str = "token.issued") -> Stamped:
    return (event, AT + i, f'{{"i":{i}}}'.encode())


async def test_a_batch_lands_in_the_ledger_and_after_the_journals_tail(store: Store) -> None:
    head = await store.audit.append("key.created", T0, b'{"kid":"k1"}')
    await store.record_issuance(
        [row("j1", aud=("https://api", 'https://d"b')), row("j2", sub="db", scope=())],
        [stamped(1), stamped(2), stamped(3, "token.refused")],
    )
    radius = await store.ledger.blast_radius("k1", T0)
    assert (radius.live_tokens, radius.subjects) == (
        2,
        (("spiffe://example.org/db", 1), ("spiffe://example.org/web", 1)),
    )
    assert radius.audiences == (("https://api", 2), ('https://d"b', 1))
    assert radius.valid_until == datetime.fromtimestamp(IAT + 300, UTC)
    records = list(await store.audit.read())
    assert [(r.seq, r.event, r.body) for r in records[1:]] == [
        (2, "token.issued", b'{"i":1}'), (3, "token.issued", b'{"i":2}'), (4, "token.refused", b'{"i":3}'),
    ]  # fmt: skip
    assert records[1].prev_hash == head.hash
    assert [r.at for r in records[1:]] == [T0 + timedelta(microseconds=i) for i in (1, 2, 3)]
    report = await verify_journal(store.audit)
    assert report.ok and report.records == 4


async def test_the_first_batch_starts_the_chain(store: Store) -> None:
    await store.record_issuance([], [stamped(1)])
    (record,) = await store.audit.read()
    assert (record.seq, record.prev_hash, record.hash) == (1, GENESIS_HASH, record.recomputed())


async def test_a_repeated_jti_is_skipped_and_its_events_still_appended(store: Store) -> None:
    await store.record_issuance([row("j1", sub="first")], [stamped(1)])
    await store.record_issuance([row("j1", sub="second"), row("j2")], [stamped(2), stamped(3)])
    radius = await store.ledger.blast_radius("k1", T0)
    assert dict(radius.subjects) == {"spiffe://example.org/first": 1, "spiffe://example.org/web": 1}
    assert len(await store.audit.read()) == 3


async def test_an_empty_batch_writes_nothing(store: Store) -> None:
    await store.record_issuance([], [])
    assert await store.audit.last() is None
    assert (await store.ledger.blast_radius("k1", T0)).live_tokens == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row("", sub="x"), "names its jti"),
        (row("j9", kid=""), "names its jti"),
        (row("j9", lifetime=-1), "expire before"),
        (row("j9", scope=("a b",)), "scope-token"),
        (row("j9", scope=("",)), "scope-token"),
    ],
    ids=["no-jti", "no-kid", "expires-before-issued", "space-in-scope", "empty-scope"],
)
async def test_a_malformed_row_refuses_the_whole_batch(store: Store, bad: LedgerRow, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await store.record_issuance([row("j1"), bad], [stamped(1)])
    assert await store.audit.last() is None
    assert (await store.ledger.blast_radius("k1", T0)).live_tokens == 0


async def test_a_bad_event_name_refuses_the_whole_batch(store: Store) -> None:
    with pytest.raises(ValueError, match="event name"):
        await store.record_issuance([row("j1")], [stamped(1), stamped(2, "bad\nname")])
    assert await store.audit.last() is None
    assert (await store.ledger.blast_radius("k1", T0)).live_tokens == 0


async def test_batches_from_replicas_form_one_chain_and_all_land(open_replica: OpenReplica) -> None:
    replicas = [await open_replica() for _ in range(3)]
    await asyncio.gather(
        *(
            replicas[i % 3].record_issuance(
                [row(f"j{i}-{n}") for n in range(5)], [stamped(i * 5 + n) for n in range(5)]
            )
            for i in range(12)
        )
    )
    report = await verify_journal(replicas[1].audit)
    assert report.ok and report.records == 60
    assert (await replicas[2].ledger.blast_radius("k1", T0)).live_tokens == 60


@pytest.fixture(params=["sqlite", "postgres"])
async def real_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite://{tmp_path}/state/broker.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()


_FAIL_SQLITE = "CREATE TRIGGER fail BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'refused'); END"
_FAIL_PG = (
    "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; "
    "CREATE TRIGGER fail BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION fail()"
)


async def test_when_the_journal_refuses_the_batch_the_ledger_keeps_none_of_it(real_store: Store) -> None:
    """One transaction: a journal insert that fails takes the batch's ledger rows back with it."""
    if isinstance(real_store, SqliteStore):
        await real_store._worker.run(lambda conn: conn.execute(_FAIL_SQLITE))
    else:
        assert isinstance(real_store, PostgresStore)
        async with real_store._pool.connection() as conn:
            await conn.execute(_FAIL_PG.encode())
    with pytest.raises(Exception, match="refused"):
        await real_store.record_issuance([row("j1"), row("j2")], [stamped(1), stamped(2)])
    assert (await real_store.ledger.blast_radius("k1", T0)).live_tokens == 0
    assert await real_store.audit.last() is None
