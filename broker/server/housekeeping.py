"""The token service's periodic work, one task per process: the rotation schedule, policy audit, pruning.

Every tick (:data:`broker.server.stateful.TICK_INTERVAL`):

* the keyring does what its schedule says is due (:meth:`~broker.tokens.keyring.Keyring.tick`): rotate, retire,
  add a missing ``next`` key. The retiring window follows the policy: a reload that allows longer tokens keeps
  retiring keys published longer, never shorter (tokens issued under the old policy are still live). Rotations
  and retirements are audited (``key.rotated``, ``key.retired``);
* a policy reload or refusal since the last tick is audited (``policy.reloaded`` with the file's SHA-256,
  ``policy.refused`` with the reason; never the file's contents);
* every :data:`PRUNE_INTERVAL` seconds, ledger rows of tokens expired more than :data:`PRUNE_AFTER` ago go, and so
  do the replay cache's expired entries (an entry is kept only while the ``jti`` it guards could still be accepted:
  RFC 7523 §3 item 7, RFC 9449 §11.1; an expired one may be taken over by an add anyway, so pruning bounds the
  table's size, not its correctness).

A store that fails (an outage) is logged once when it starts failing and once when it recovers, not every tick.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from broker.audit.events import AuditEvent, KeyCreated, KeyRetired, KeyRotated, PolicyRefused, PolicyReloaded
from broker.errors import BrokerError, ConfigError
from broker.oauth.replay import ReplayCache
from broker.server.recorder import Recorder
from broker.tokens.keyring import Keyring, TickResult
from broker.tokens.ledger import IssuanceLedgerStore
from broker.tokens.policy import PolicyStore

__all__ = ["PRUNE_AFTER", "PRUNE_INTERVAL", "Housekeeper", "policy_max_lifetime"]

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 300.0  # seconds between ledger prunes
PRUNE_AFTER = timedelta(hours=1)  # a ledger row outlives its token by this much (blast radius counts live ones)


def policy_max_lifetime(policy_store: PolicyStore) -> int:
    """The longest token lifetime the current policy allows (the overlap rule's retiring window)."""
    return max((rule.max_token_lifetime for rule in policy_store.current().rules), default=1)


class Housekeeper:
    def __init__(
        self,
        keyring: Keyring,
        recorder: Recorder,
        ledger: IssuanceLedgerStore,
        policy_store: PolicyStore,
        clock: Callable[[], float],
        *,
        replay: ReplayCache | None = None,
    ) -> None:
        self._keyring, self._recorder, self._ledger, self._replay = keyring, recorder, ledger, replay
        self._policy_store, self._clock = policy_store, clock
        self._policy_seen = (getattr(policy_store, "generation", 0), getattr(policy_store, "last_error", None))
        self._next_prune = clock() + PRUNE_INTERVAL
        self._failing: str | None = None
        self.rotations = 0  # scheduled rotations this replica made
        self.failures = 0  # ticks that failed (the rotation schedule or pruning could not run)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.tick()

    async def tick(self) -> None:
        """One round; never raises (a failure is logged when it starts and when it ends)."""
        try:
            self._audit_policy_changes()
            self._widen_retiring_window()
            self._audit_keyring(await self._keyring.tick())
            if self._clock() >= self._next_prune:
                self._next_prune = self._clock() + PRUNE_INTERVAL
                await self._prune()
        except BrokerError as exc:
            self._failed(exc.description or exc.error)
            return
        except Exception as exc:  # the housekeeping must survive anything; the next tick tries again
            self._failed(f"unexpected {type(exc).__name__}")
            return
        if self._failing is not None:
            log.info("housekeeping recovered (was: %s)", self._failing)
            self._failing = None

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if reason != self._failing:
            log.error("housekeeping (key rotation schedule, pruning) failing: %s", reason)
        self._failing = reason

    def _widen_retiring_window(self) -> None:
        longest = policy_max_lifetime(self._policy_store)
        if longest > self._keyring.schedule.max_token_lifetime:
            self._keyring.schedule = replace(self._keyring.schedule, max_token_lifetime=longest)

    def _audit_keyring(self, result: TickResult) -> None:
        if result.rotation is not None:
            self.rotations += 1
            rotation = result.rotation
            self._record(KeyRotated(activated=rotation.active_kid, retiring=rotation.previous_kid,
                                    next=rotation.next_kid, reason="scheduled"))  # fmt: skip
        for kid in result.retired:
            self._record(KeyRetired(kid=kid))
        for kid, state, origin in self._keyring.created:
            self._record(KeyCreated(kid=kid, state=state.value, origin=origin))
        self._keyring.created.clear()

    def _audit_policy_changes(self) -> None:
        generation = getattr(self._policy_store, "generation", 0)
        error: ConfigError | None = getattr(self._policy_store, "last_error", None)
        seen_generation, seen_error = self._policy_seen
        self._policy_seen = (generation, error)
        source = str(getattr(self._policy_store, "path", "<memory>"))
        if generation != seen_generation:
            self._record(PolicyReloaded(source=source, sha256=_file_sha256(source)))
        if error is not None and error is not seen_error:
            self._record(PolicyRefused(source=source, reason=error.description))

    async def _prune(self) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        before = now - PRUNE_AFTER
        pruned = await self._ledger.prune(before)
        if pruned:
            log.info("ledger: pruned %d rows of tokens expired before %s", pruned, before.isoformat())
        if self._replay is not None:
            dropped = await self._replay.prune(now)
            if dropped:
                log.info("replay cache: pruned %d expired entries", dropped)

    def _record(self, event: AuditEvent) -> None:
        if not self._recorder.trail.record(event):
            log.error("audit trail full: a %s record was not written", event.event)


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""
