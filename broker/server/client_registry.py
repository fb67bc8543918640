"""The replica's view of the client registry (:class:`~broker.tokens.clients.ClientRegistryStore`): every
registered client in memory, so the token endpoint's ``private_key_jwt`` path (RFC 7523 §2.2) finds a
``client_id`` without a store query, and in step with the store through the ``clients`` change topic.

Keeping in step (reads are whole: a registry is small, and a whole read has no ordering to get wrong):

* :meth:`ClientRegistryView.open` reads every client before the service serves (a store that cannot be read
  fails the start, as the keyring's and the revocation log's do);
* :meth:`ClientRegistryView.follow` follows the store's ``clients`` change topic: each change, a resync one
  included, reads the registry again (a change that lands during a read is delivered again after it: the
  subscription coalesces, never drops);
* :meth:`ClientRegistryView.maintain` reads it every ``confirm_interval`` anyway, so a lost change event costs at
  most that, and so a long store outage is noticed even when nothing changes.

Fail closed, like the keyring and the revocation index: :meth:`ClientRegistryView.get` raises
:class:`ClientRegistryUnavailableError` (``temporarily_unavailable``) when the view has not been confirmed against
the store for ``max_unconfirmed`` seconds: a client disabled or removed elsewhere must not keep authenticating on
this replica for longer than that. A short outage does not stop authentication.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.errors import BrokerError, TemporarilyUnavailableError
from broker.events import ChangeFeed
from broker.events.topics import CLIENTS
from broker.tokens.clients import ClientRegistryStore, RegisteredClient

__all__ = [
    "CONFIRM_INTERVAL",
    "DEFAULT_MAX_UNCONFIRMED",
    "ClientRegistryUnavailableError",
    "ClientRegistryView",
]

log = logging.getLogger(__name__)

CONFIRM_INTERVAL = 5.0  # seconds between reads without a change event
DEFAULT_MAX_UNCONFIRMED = 60.0
RESUBSCRIBE_DELAY = 1.0


class ClientRegistryUnavailableError(TemporarilyUnavailableError):
    """The view of the client registry is not confirmed against the store: no client is authenticated by it."""


class ClientRegistryView:
    """Every registered client, from memory; :meth:`open` it, then run :meth:`run` (or :meth:`follow` and
    :meth:`maintain`) as a task."""

    def __init__(
        self,
        registry: ClientRegistryStore,
        changes: ChangeFeed,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
        confirm_interval: float = CONFIRM_INTERVAL,
    ) -> None:
        self._registry, self._changes, self._clock = registry, changes, clock
        self.max_unconfirmed = max_unconfirmed
        self.confirm_interval = confirm_interval
        self._clients: dict[str, RegisteredClient] = {}
        self._confirmed_at: float | None = None  # the clock when the last successful read began
        self._read_lock = asyncio.Lock()
        self.reads = 0

    @classmethod
    async def open(
        cls,
        registry: ClientRegistryStore,
        changes: ChangeFeed,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
        confirm_interval: float = CONFIRM_INTERVAL,
    ) -> ClientRegistryView:
        """A view that has read the registry (a store error propagates: the service does not start)."""
        view = cls(registry, changes, clock=clock, max_unconfirmed=max_unconfirmed, confirm_interval=confirm_interval)
        await view.reload()
        return view

    # -- what the token service asks --

    def get(self, client_id: str) -> RegisteredClient | None:
        """The registered client (disabled ones too: the caller refuses them), or None; synchronous, from memory.

        :class:`ClientRegistryUnavailableError` when the view is not confirmed (see the module docstring)."""
        self._check_confirmed()
        return self._clients.get(client_id)

    def problem(self) -> str | None:
        """None when the view is confirmed against the store, else why not (for readiness)."""
        try:
            self._check_confirmed()
        except ClientRegistryUnavailableError as exc:
            return exc.description
        return None

    def __len__(self) -> int:
        return len(self._clients)

    # -- keeping in step --

    async def reload(self) -> None:
        """Read every client now (one read at a time); a store error propagates and changes nothing."""
        async with self._read_lock:
            began = self._clock()
            clients = await self._registry.list_all()
            self.reads += 1
            self._clients = {client.client_id: client for client in clients}
            self._confirmed_at = began

    async def follow(self) -> None:
        """Follow the ``clients`` change topic until cancelled (a task; see the module docstring)."""
        while True:
            try:
                subscription = self._changes.subscribe(CLIENTS)
            except BrokerError as exc:
                log.error("cannot follow the client registry's changes (%s); trying again in %g s",
                          exc.description or exc.error, RESUBSCRIBE_DELAY)  # fmt: skip
                await asyncio.sleep(RESUBSCRIBE_DELAY)
                continue
            try:
                async for _change in subscription:
                    try:
                        await self.reload()
                    except BrokerError as exc:
                        log.error("client registry read failed: %s", exc.detail or exc.error)
            finally:
                subscription.close()
            log.error("the store's change feed ended; subscribing again in %g s", RESUBSCRIBE_DELAY)
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def maintain(self) -> None:
        """Until cancelled: read the registry every ``confirm_interval`` (logging only when reading starts or stops
        failing)."""
        failing = False
        while True:
            await asyncio.sleep(self.confirm_interval)
            try:
                await self.reload()
            except BrokerError as exc:
                if not failing:
                    log.error("client registry: cannot read the store (%s)", exc.detail or exc.error)
                failing = True
            else:
                if failing:
                    log.info("client registry: reading the store again")
                failing = False

    async def run(self) -> None:
        """:meth:`follow` and :meth:`maintain` until cancelled."""
        await asyncio.gather(self.follow(), self.maintain())

    def _check_confirmed(self) -> None:
        if self._confirmed_at is None:
            raise ClientRegistryUnavailableError("the client registry has not been read yet")
        if self._clock() - self._confirmed_at > self.max_unconfirmed:
            raise ClientRegistryUnavailableError(
                f"the client registry has not been confirmed against the store for over {self.max_unconfirmed:g} s"
            )
