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
   replica, or by ``keys`` on the command line, takes effect here within the feed's latency), one ticks the
   rotation schedule every :data:`TICK_INTERVAL` seconds (exactly one replica wins each rotation: the store's
   compare-and-set);
5. the recorder (ledger and audit trail, group commit), which the token endpoint uses as its audit hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from broker._sealing import KekRing, generate_kek_file
from broker.audit.events import KeyRetired, KeyRotated, StoreMigrated
from broker.config import KEK_ENV, BrokerSettings, kek_from_environment
from broker.errors import BrokerError, StoreSchemaBehindError
from broker.server.recorder import Recorder
from broker.store import Store, latest_version, open_store
from broker.store.url import StoreUrl
from broker.tokens.keyring import Keyring, TickResult
from broker.tokens.policy import PolicyStore
from broker.tokens.rotation import RotationSchedule

__all__ = ["TICK_INTERVAL", "ServiceState", "load_keks", "open_migrated", "open_state", "policy_max_lifetime"]

log = logging.getLogger(__name__)

TICK_INTERVAL = 1.0  # seconds between schedule checks (each reads the store once)
CLOSE_TIMEOUT = 10.0  # seconds to drain the ledger and the audit trail on a clean stop
DEV_KEK_FILE = "kek"


@dataclass
class ServiceState:
    url: StoreUrl
    store: Store
    keyring: Keyring
    recorder: Recorder
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lost = await self.recorder.close(CLOSE_TIMEOUT)
        if lost:
            log.error("stopping: %d ledger or audit records could not be written to the store", lost)
        await self.store.close()


def policy_max_lifetime(policy_store: PolicyStore) -> int:
    """The longest token lifetime the current policy allows (the overlap rule's retiring window)."""
    rules = policy_store.current().rules
    return max((rule.max_token_lifetime for rule in rules), default=1)


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
        keyring = await Keyring.open(store.keyring, keks, schedule, clock, legacy_dir, blast_radius=store.ledger)
        recorder = Recorder.for_store(
            store, batch_window=settings.ledger.batch_window, batch_max=settings.ledger.batch_max
        )
        if migrated is not None:
            await recorder.trail.record_now(migrated)
    except BaseException:
        await store.close()
        raise
    recorder.start()
    state = ServiceState(url=url, store=store, keyring=keyring, recorder=recorder)
    state.tasks.append(asyncio.create_task(_follow_keyring(state), name="keyring-follower"))
    state.tasks.append(asyncio.create_task(_tick_schedule(state, policy_store), name="keyring-schedule"))
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
    """Open ``url``; if its schema is behind, migrate it (under the engine's lock) and say from which version."""
    try:
        return await open_store(url, migrate=False), None
    except StoreSchemaBehindError as behind:
        store = await open_store(url)
        migrated = StoreMigrated(store=url.redacted(), from_version=behind.current, to_version=latest_version())
        log.info("store %s migrated from schema version %d to %d", url.redacted(), behind.current, latest_version())
        return store, migrated


async def _follow_keyring(state: ServiceState) -> None:
    """Reload the keyring on every ``keyring`` change (and on every resync after a reconnect)."""
    subscription = state.store.changes.subscribe("keyring")
    try:
        async for _change in subscription:
            try:
                await state.keyring.reload()
            except BrokerError as exc:
                log.error("keyring reload failed: %s", exc.description or exc.error)
    finally:
        subscription.close()


async def _tick_schedule(state: ServiceState, policy_store: PolicyStore) -> None:
    """Every :data:`TICK_INTERVAL`: rotate or retire what is due, and audit what changed."""
    while True:
        await asyncio.sleep(TICK_INTERVAL)
        try:
            _widen_retiring_window(state.keyring, policy_store)
            result = await state.keyring.tick()
        except BrokerError as exc:
            log.error("keyring schedule: %s", exc.description or exc.error)
            continue
        except Exception as exc:  # the schedule must survive anything; the next tick tries again
            log.error("keyring schedule: unexpected %s", type(exc).__name__)
            continue
        _audit_tick(state.recorder, result)


def _widen_retiring_window(keyring: Keyring, policy_store: PolicyStore) -> None:
    """A policy reload that allows longer tokens keeps retiring keys published longer (never shorter: tokens
    issued under the old policy are still live)."""
    longest = policy_max_lifetime(policy_store)
    if longest > keyring.schedule.max_token_lifetime:
        keyring.schedule = replace(keyring.schedule, max_token_lifetime=longest)


def _audit_tick(recorder: Recorder, result: TickResult) -> None:
    if result.rotation is not None:
        rotation = result.rotation
        event = KeyRotated(
            activated=rotation.active_kid, retiring=rotation.previous_kid, next=rotation.next_kid, reason="scheduled"
        )
        recorder.trail.record(event)
    for kid in result.retired:
        recorder.trail.record(KeyRetired(kid=kid))
