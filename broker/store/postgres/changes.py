"""Change events on PostgreSQL: a counter and a ``NOTIFY`` in the writing transaction, one ``LISTEN`` connection.

* :func:`bump` runs inside the transaction that changes a topic's state: it upserts the topic's counter and calls
  ``pg_notify('spiffe_broker_changes', '<topic> <version>')``. A notification is delivered only if and when the
  transaction commits, in commit order (PostgreSQL 15 docs, SQL command NOTIFY), so a listener never hears of a
  change it cannot read yet. The counter row is locked until commit: writers of one topic take turns.
* :class:`PostgresChangeFeed` keeps one autocommit connection outside the pool (same conninfo, password, TLS,
  timeouts and keepalives as the pool; ``application_name=spiffe-broker-changes``) that runs ``LISTEN``, reads
  every counter, and only then lets subscribers do their full read: nothing committed after that read is missed.
* Notifications sent while the listener is disconnected are lost (NOTIFY is not queued for a session that is not
  listening), so after every reconnect, made with jittered backoff, each subscriber gets ``resync=True``.
* Every ``safety_poll_s`` (5 s) the listener re-reads the counters, bounded by ``probe_timeout_s``: it catches a
  lost or forged notification and proves the connection alive; a connection that does not answer is dropped and
  replaced (TCP keepalives and ``tcp_user_timeout`` from the pool's options notice a dead peer as well).
* Logs name the store by :meth:`~broker.store.url.StoreUrl.redacted` and errors by class only: no secret.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import Any

import psycopg

from broker._backoff import Attempts, Backoff
from broker.events import FollowedFeed, check_topic
from broker.store.postgres._pool import CANCEL_GRACE_S, Conn, Pool, connection

__all__ = ["CHANNEL", "PostgresChangeFeed", "bump"]

log = logging.getLogger(__name__)

CHANNEL = "spiffe_broker_changes"
APPLICATION_NAME = "spiffe-broker-changes"
SAFETY_POLL_S = 5.0
PROBE_TIMEOUT_S = 3.0
_RECONNECT = Backoff(initial=0.2, maximum=5.0)
_BUMP = (
    "WITH bumped AS (INSERT INTO change_counters (topic, version) VALUES (%s, 1) "
    "ON CONFLICT (topic) DO UPDATE SET version = change_counters.version + 1 RETURNING topic, version) "
    "SELECT version, pg_notify('spiffe_broker_changes', topic || ' ' || version) FROM bumped"
)
assert CHANNEL in _BUMP


async def bump(conn: Conn, topic: str) -> int:
    """Bump ``topic`` inside the caller's transaction; its new version (notified when that commits)."""
    row = await (await conn.execute(_BUMP, (check_topic(topic),))).fetchone()
    assert row is not None
    return int(row[0])


def _parse(payload: str) -> tuple[str, int] | None:
    topic, _, version = payload.partition(" ")
    try:
        return check_topic(topic), int(version)
    except ValueError:
        return None


class PostgresChangeFeed(FollowedFeed):
    """The store's :class:`~broker.events.ChangeFeed`; the listener connects with the first subscription."""

    def __init__(
        self, pool: Pool, store: str, *, safety_poll_s: float = SAFETY_POLL_S, probe_timeout_s: float = PROBE_TIMEOUT_S
    ) -> None:
        super().__init__(store, task_name="broker-postgres-changes")
        self._pool = pool
        self._safety_poll_s = safety_poll_s
        self._probe_timeout_s = probe_timeout_s

    async def publish(self, topic: str) -> int:
        check_topic(topic)
        async with connection(self._pool, self._store) as conn, conn.transaction():
            return await bump(conn, topic)

    async def _follow(self) -> None:
        failures = Attempts(_RECONNECT)
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._hub.resync(await self._counters(conn))
                    failures.reset()
                    await self._receive(conn)
                finally:
                    await conn.close()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                delay = failures.next()
                log.warning(
                    "the change feed lost its connection to the PostgreSQL store %s (%s); reconnecting in %.1f s, "
                    "then every follower re-reads", self._store, type(exc).__name__, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)

    async def _connect(self) -> Conn:
        conninfo, pool_kwargs = self._pool.conninfo, self._pool.kwargs
        if not isinstance(conninfo, str) or not isinstance(pool_kwargs, dict):
            raise TypeError("the change feed needs a pool opened with a fixed conninfo and kwargs (open_pool)")
        kwargs: dict[str, Any] = {**pool_kwargs, "application_name": APPLICATION_NAME, "autocommit": True}
        return await psycopg.AsyncConnection.connect(conninfo, **kwargs)

    async def _receive(self, conn: Conn) -> None:
        """Notifications until the connection fails; the counters re-read every ``safety_poll_s``."""
        while True:
            async with aclosing(conn.notifies(timeout=self._safety_poll_s)) as notifications:
                async for notification in notifications:
                    parsed = _parse(notification.payload)
                    if parsed is None:
                        log.warning("ignored a notification on %s that is not '<topic> <version>'", CHANNEL)
                        break  # read the counters now instead
                    self._hub.seen(*parsed)
            self._hub.counters_read(await self._counters(conn))

    async def _counters(self, conn: Conn) -> dict[str, int]:
        # As in _pool.connection: the inner bound cancels the query; the outer one stops waiting for the cancel.
        async with asyncio.timeout(self._probe_timeout_s + CANCEL_GRACE_S), asyncio.timeout(self._probe_timeout_s):
            cursor = await conn.execute("SELECT topic, version FROM change_counters")
            return {str(topic): int(version) for topic, version in await cursor.fetchall()}
