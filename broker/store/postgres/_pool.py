"""A psycopg 3 async connection pool to the PostgreSQL store, and the one place its errors are translated.

* The password comes from ``password_file`` (a mounted Secret; one trailing newline dropped) or from the caller
  (the setting read from the environment); it goes to libpq as a keyword, never into a URL, a log or a message.
* Every session gets ``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout`` (PostgreSQL
  15 docs, 20.11 "Client Connection Defaults") and ``TimeZone=UTC``; ``connect_timeout`` bounds each connection
  attempt; TCP keepalives and ``tcp_user_timeout`` notice a dead peer. A server that stops answering (hung,
  SIGSTOPped, a black-holed network) cannot hold a caller: :func:`connection` bounds each whole call on the
  client with ``op_timeout_s`` and then fails with :class:`StoreUnavailableError`.
* :func:`open_pool` waits at most ``start_timeout`` for the first connection, retrying with the pool's own
  backoff, then fails with :class:`StoreUnavailableError`. Later, a broken connection is replaced by the pool in
  the background, and a call that cannot get one within ``pool_timeout`` is :class:`StoreUnavailableError` (503).
* Migrations run in one transaction under ``pg_advisory_xact_lock`` (9.27.10 "Advisory Lock Functions"), so of
  two replicas starting at once one applies them and the other then finds them applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from broker.errors import StoreCorruptError, StoreError, StoreUnavailableError
from broker.store.migrations import Migration, check_history, check_version, load
from broker.store.url import StoreUrl

__all__ = ["MIGRATIONS", "Conn", "PgOptions", "Pool", "connection", "migrate", "open_pool"]

Conn = psycopg.AsyncConnection[TupleRow]


class Pool(AsyncConnectionPool[Conn]):
    """The pool, with the client-side bound on every call made through :func:`connection`."""

    op_timeout_s: float = 10.0


MIGRATIONS: tuple[Migration, ...] = load("broker.store.postgres.migrations")
MIGRATION_LOCK = 7_315_420_001  # pg_advisory_xact_lock keys, fixed for the broker
AUDIT_LOCK = 7_315_420_002
CANCEL_GRACE_S = 1.0  # after the client-side bound, how long a server may take to honour the cancel request

_SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS broker_schema (
    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True, slots=True)
class PgOptions:
    statement_timeout_ms: int = 5_000
    connect_timeout_s: int = 5
    start_timeout_s: float = 30.0
    pool_timeout_s: float = 5.0
    op_timeout_s: float = 10.0  # client-side bound on one whole call: pool wait, queries, commit
    lock_timeout_ms: int = 5_000
    idle_in_transaction_timeout_ms: int = 10_000
    tcp_user_timeout_ms: int = 10_000
    min_size: int = 1
    max_size: int = 10


def _password(url: StoreUrl, password: str | None) -> str | None:
    if url.password_file is None:
        return password
    try:
        text = url.password_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot read the PostgreSQL password file {url.password_file}: {exc.strerror}") from None
    return text.removesuffix("\n")


async def open_pool(url: StoreUrl, *, password: str | None, options: PgOptions) -> Pool:
    kwargs: dict[str, object] = {
        "options": (
            f"-c statement_timeout={options.statement_timeout_ms} -c lock_timeout={options.lock_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={options.idle_in_transaction_timeout_ms} -c TimeZone=UTC"
        ),
        "connect_timeout": options.connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": options.tcp_user_timeout_ms,
        "application_name": "spiffe-broker",
        # One round trip for a lone statement: a change of several statements opens conn.transaction() (BEGIN ...
        # COMMIT); reads see READ COMMITTED snapshots per statement, as they did inside an implicit transaction.
        "autocommit": True,
    }
    secret = _password(url, password)
    if secret is not None:
        kwargs["password"] = secret
    pool = Pool(
        url.conninfo,
        kwargs=kwargs,
        min_size=options.min_size,
        max_size=options.max_size,
        timeout=options.pool_timeout_s,
        open=False,
        name="spiffe-broker-store",
    )
    pool.op_timeout_s = options.op_timeout_s
    try:
        await pool.open(wait=True, timeout=options.start_timeout_s)
    except PoolTimeout:
        await pool.close()
        raise StoreUnavailableError(
            f"cannot reach the PostgreSQL store {url.redacted()} within {options.start_timeout_s:g} s: check the "
            "host, the database name, the user and the password file, and that PostgreSQL is running"
        ) from None
    return pool


@asynccontextmanager
async def connection(pool: Pool, store: str) -> AsyncIterator[Conn]:
    """A pooled connection; unreachable, timed out or broken becomes :class:`StoreUnavailableError`."""
    try:
        # The inner bound cancels the call; psycopg then asks the server to cancel the query and waits up to 5 s
        # for it. A hung server never answers, so the outer bound cancels again, and psycopg closes the connection.
        async with (
            asyncio.timeout(pool.op_timeout_s + CANCEL_GRACE_S),
            asyncio.timeout(pool.op_timeout_s),
            pool.connection() as conn,
        ):
            yield conn
    except TimeoutError:
        raise StoreUnavailableError(
            f"the PostgreSQL store {store} did not answer within {pool.op_timeout_s:g} s"
        ) from None
    except PoolTimeout:
        raise StoreUnavailableError(f"no connection to the PostgreSQL store {store} is available") from None
    except psycopg.errors.QueryCanceled:
        raise StoreUnavailableError(
            f"the PostgreSQL store {store} did not answer within the statement timeout"
        ) from None
    except psycopg.OperationalError as exc:
        raise StoreUnavailableError(f"the PostgreSQL store {store} failed: {type(exc).__name__}") from None


_FOREIGN_RELATIONS = """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"""


async def _refuse_foreign(conn: Conn, store: str) -> None:
    """A database with tables but no ``broker_schema`` belongs to another program: refused, nothing changed (the
    transaction rolls back). SQLite's equivalent is the ``application_id`` check."""
    found = await (await conn.execute("SELECT to_regclass('broker_schema') IS NOT NULL")).fetchone()
    if found is not None and found[0]:
        return
    count = await (await conn.execute(_FOREIGN_RELATIONS)).fetchone()
    if count is not None and int(count[0]) > 0:
        raise StoreCorruptError(
            f"store {store} holds {int(count[0])} tables or other relations but no broker_schema: it is another "
            "program's database; point --store at an empty database for spiffe-broker (nothing was changed)"
        )


async def migrate(pool: Pool, store: str, *, allow: bool) -> int | None:
    """Apply what is missing under the advisory lock; the version migrated from, or None if nothing was applied."""
    async with connection(pool, store) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await _refuse_foreign(conn, store)
        await conn.execute(_SCHEMA_TABLE)
        cursor = await conn.execute("SELECT version, name FROM broker_schema ORDER BY version")
        applied = [(int(v), str(n)) for v, n in await cursor.fetchall()]
        check_history(applied, MIGRATIONS, store=store)
        current = max((v for v, _ in applied), default=0)
        check_version(current, len(MIGRATIONS), store=store, migrate=allow)
        for migration in MIGRATIONS[current:]:
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO broker_schema (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
    return current if current < len(MIGRATIONS) else None
