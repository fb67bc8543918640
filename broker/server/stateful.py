"""The token service's shared state: the store, the signing keyring, the issuance ledger and the audit trail.

:func:`open_state` opens them in order and :meth:`ServiceState.aclose` closes them in reverse:

1. the store named by ``[store] url`` (default ``sqlite:///<state_dir>/broker.db``), checked and migrated;
   an unreachable PostgreSQL is retried within a bounded time, then a clear error (the process exits non-zero);
2. the key-encryption keys (``[keyring] kek_file`` or ``$SPIFFE_BROKER_KEK``; ``dev`` makes one in its state
   directory) and the rotation schedule, whose overlap rule is checked against the policy's longest token
   lifetime (a schedule that breaks it is refused here, naming both numbers);
3. the keyring: existing keys opened (a wrong KEK is refused, nothing written), or the legacy key files imported
   once, or fresh keys generated;
4. two background tasks: one follows the store's ``keyring`` change events (a rotation or revoke made by another
   replica, or by ``keys`` on the command line, takes effect here within the feed's latency), one does the
   housekeeping every :data:`TICK_INTERVAL` seconds (:mod:`broker.server.housekeeping`: the rotation schedule,
   where exactly one replica wins each rotation by the store's compare-and-set; policy audit; ledger pruning);
5. the recorder (ledger and audit trail, group commit), which the token endpoint uses as its audit hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker._sealing import KekRing, generate_kek_file
from broker.audit.events import KeyCreated, StoreMigrated
from broker.config import KEK_ENV, BrokerSettings, kek_from_environment
from broker.errors import BrokerError
from broker.events import KEYRING
from broker.server.housekeeping import Housekeeper, policy_max_lifetime
from broker.server.recorder import Recorder
from broker.store import Store, latest_version, open_store
from broker.store.url import StoreUrl
from broker.tokens.keyring import Keyring
from broker.tokens.policy import PolicyStore
from broker.tokens.rotation import RotationSchedule

__all__ = ["TICK_INTERVAL", "ServiceState", "load_keks", "open_migrated", "open_state", "policy_max_lifetime"]

log = logging.getLogger(__name__)

TICK_INTERVAL = 1.0  # seconds between schedule checks (each reads the store once)
CLOSE_TIMEOUT = 10.0  # seconds to drain the ledger and the audit trail on a clean stop
DEV_KEK_FILE = "kek"
RESUBSCRIBE_DELAY = 1.0


@dataclass
class ServiceState:
    url: StoreUrl
    store: Store
    keyring: Keyring
    recorder: Recorder
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    secrets: KekRing | None = field(default=None, repr=False)  # derives the replicas' shared secrets (DPoP nonces)
    housekeeper: Housekeeper | None = None

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a task that died was logged; drain anyway
                await task
        lost = await self.recorder.close(CLOSE_TIMEOUT)
        if lost:
            log.error("stopping: %d ledger or audit records could not be written to the store", lost)
        await self.store.close()


def load_keks(settings: BrokerSettings, *, generate_in: Path | None = None) -> KekRing:
    """The configured KEKs; with ``generate_in`` (``dev``) and nothing configured, ``<dir>/kek``, made if missing."""
    keyring = settings.keyring
    from_env = kek_from_environment()
    kek_file = keyring.kek_file
    if kek_file is None and not from_env and generate_in is not None:
        kek_file = generate_in / DEV_KEK_FILE
        if not kek_file.exists():
            generate_kek_file(kek_file)
            log.info("generated a key-encryption key in %s (dev only)", kek_file)
    environ = {KEK_ENV: from_env} if from_env else {}
    return KekRing.load(kek_file, keyring.previous_kek_files, environ)


async def open_state(
    settings: BrokerSettings,
    *,
    policy_store: PolicyStore,
    clock: Callable[[], float],
    legacy_dir: Path | None = None,
    generate_kek_in: Path | None = None,
) -> ServiceState:
    """Open the store, the keyring and the recorder, and start following changes (see the module docstring)."""
    schedule = _schedule(settings, policy_store)  # refused before anything is opened
    keks = load_keks(settings, generate_in=generate_kek_in)
    url = StoreUrl.parse(settings.store_url())
    store, migrated = await open_migrated(url)
    try:
        keyring = await Keyring.open(
            store.keyring,
            keks,
            schedule,
            clock,
            legacy_dir,
            blast_radius=store.ledger,
            max_unconfirmed=settings.keyring.max_unconfirmed,
        )
        recorder = Recorder.for_store(
            store, batch_window=settings.ledger.batch_window, batch_max=settings.ledger.batch_max
        )
        if migrated is not None:
            await recorder.trail.record_now(migrated)
        for kid, key_state, origin in keyring.created:
            await recorder.trail.record_now(KeyCreated(kid=kid, state=key_state.value, origin=origin))
        keyring.created.clear()
    except BaseException:
        await store.close()
        raise
    recorder.start()
    state = ServiceState(url=url, store=store, keyring=keyring, recorder=recorder, secrets=keks)
    state.tasks.append(asyncio.create_task(_follow_keyring(state), name="keyring-follower"))
    housekeeper = state.housekeeper = Housekeeper(keyring, recorder, store.ledger, policy_store, clock,
                                                  replay=store.replay)  # fmt: skip
    state.tasks.append(asyncio.create_task(housekeeper.run(TICK_INTERVAL), name="housekeeping"))
    return state


def _schedule(settings: BrokerSettings, policy_store: PolicyStore) -> RotationSchedule:
    keyring = settings.keyring
    return RotationSchedule(
        period=keyring.rotation_period,
        jwks_max_age=keyring.jwks_max_age,
        max_token_lifetime=policy_max_lifetime(policy_store),
        leeway=keyring.leeway,
    )


async def open_migrated(url: StoreUrl) -> tuple[Store, StoreMigrated | None]:
    """Open ``url``, migrating it if its schema is behind; the migration to audit, if this process applied it
    (of replicas starting together, only the one that applied it says so)."""
    store = await open_store(url)
    if store.migrated_from is None:
        return store, None
    log.info("store %s migrated from schema version %d to %d", url.redacted(), store.migrated_from, latest_version())
    return store, StoreMigrated(store=url.redacted(), from_version=store.migrated_from, to_version=latest_version())


async def _follow_keyring(state: ServiceState) -> None:
    """Reload the keyring on every ``keyring`` change (and on every resync after a reconnect). A feed that ends
    (its background task died) is subscribed again after :data:`RESUBSCRIBE_DELAY`; the housekeeping tick also
    reloads every second, so a replica never falls far behind."""
    while True:
        try:
            subscription = state.store.changes.subscribe(KEYRING)
        except BrokerError as exc:
            log.error("cannot follow the store's keyring changes (%s); trying again in %g s",
                      exc.description or exc.error, RESUBSCRIBE_DELAY)  # fmt: skip
            await asyncio.sleep(RESUBSCRIBE_DELAY)
            continue
        try:
            async for _change in subscription:
                try:
                    await state.keyring.reload()
                except BrokerError as exc:
                    log.error("keyring reload failed: %s", exc.description or exc.error)
        finally:
            subscription.close()
        log.error("the store's change feed ended; subscribing again in %g s", RESUBSCRIBE_DELAY)
        await asyncio.sleep(RESUBSCRIBE_DELAY)
