"""The token endpoint's audit hook (:class:`broker.tokens.endpoint.Audit`): the issuance ledger and the audit trail.

* A token issued: one item on one batch writer (:mod:`broker._batch`), queued without waiting on the store; the
  writer turns it into the token's :data:`~broker.tokens.ledger.LedgerRow` and its ``token.issued`` audit record,
  and writes both with :meth:`~broker.store.base.Store.record_issuance`: one transaction per batch, so the ledger
  and the journal always hold the same tokens. When the writer cannot take the item (the store is down or behind
  and the queue is full) the request fails closed: the hook raises ``temporarily_unavailable`` (503) and the token
  is never returned, so no token goes out unrecorded.
* A request refused: a ``token.refused`` event on the same writer, with the error code and the client's SPIFFE ID
  when it was authenticated, never the request. If the writer is full then, the refusal stands (it was already
  refused); the lost event is logged and counted in :attr:`Recorder.refusals_not_recorded`.
* Other events (keys, policy, admin calls) go through :attr:`Recorder.trail` (:mod:`broker.audit.trail`).

Why the work is split so: the hot path only appends a tuple of references that the token already holds (about
1 us); the ledger row, the audit body and the hash chain are made once per batch, in one loop, where they cost a
fraction of what the same code costs run once per request between the TLS, HTTP and JOSE work (measured:
docs/benchmarks.md, issue 9's benchmarks).

What a crash can lose is one batch window of the writer (see :mod:`broker._batch`), of the ledger and the journal
alike. The ``at`` of a token's record is when the token was issued, in microseconds since the epoch; the chain
orders records as they were appended, so a key or policy event from the trail may sit between token records
that happened before it (each keeps its own ``at``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from broker import tracing
from broker._batch import BatchWriter
from broker.audit.events import AuditEvent, TokenIssued, TokenRefused, token_issued_body
from broker.audit.journal import Stamped
from broker.audit.trail import AuditTrail
from broker.errors import OAuthError, TemporarilyUnavailableError
from broker.store.base import Store
from broker.tokens.issuer import AuthenticatedClient, IssuedToken
from broker.tokens.ledger import LedgerRow

__all__ = ["BEHIND", "Recorder", "rows_of"]

log = logging.getLogger(__name__)

BEHIND = "the issuance ledger or the audit trail cannot keep up with the store: retry shortly"
ISSUED = TokenIssued.event

# What the hot path queues for a token: its claims (never the token itself), kid, audience, scopes, the client and
# the binding column (``x5t#S256=...``, ``jkt=...`` or ``none``).
Issued = tuple[dict[str, Any], str, str, tuple[str, ...], AuthenticatedClient, str]
Pending = tuple[int, Issued | AuditEvent]  # (at, microseconds since the epoch; what happened)


def _now_micros() -> int:
    return time.time_ns() // 1000


class Recorder:
    """Implements :class:`broker.tokens.endpoint.Audit`; :meth:`start` it, and :meth:`close` it to drain."""

    def __init__(
        self,
        store: Store,
        *,
        trail: AuditTrail,
        batch_window: float = 0.05,
        batch_max: int = 512,
        capacity: int = 8192,
        clock: Callable[[], int] = _now_micros,
    ) -> None:
        self._store = store
        self.trail = trail
        self._clock = clock
        self.tokens: BatchWriter[Pending] = BatchWriter(
            self._write, name="tokens", batch_window=batch_window, batch_max=batch_max, capacity=capacity
        )
        self.refusals_not_recorded = 0

    @classmethod
    def for_store(cls, store: Store, *, batch_window: float = 0.05, batch_max: int = 512) -> Recorder:
        """The token writer and the trail for ``store``'s ledger and journal, each queueing at most 16 batches."""
        capacity = 16 * batch_max
        trail = AuditTrail(store.audit, batch_window=batch_window, batch_max=batch_max, capacity=capacity)
        return cls(store, trail=trail, batch_window=batch_window, batch_max=batch_max, capacity=capacity)

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None:
        facts: Issued = (token.claims, token.kid, token.audience, token.scopes, client, token.bound())
        if not self.tokens.submit((self._clock(), facts)):
            raise TemporarilyUnavailableError(BEHIND)

    def refused(
        self,
        error: OAuthError,
        client: AuthenticatedClient | None,
        grant_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        spiffe_id = None if client is None else str(client.spiffe_id)
        event = TokenRefused(
            error=error.error, spiffe_id=spiffe_id, grant_type=grant_type, status=error.status, reason=reason
        )
        if not self.tokens.submit((self._clock(), event)):
            self.refusals_not_recorded += 1
            log.warning("audit trail full: a token.refused event (%s) was not recorded", error.error)

    async def _write(self, batch: Sequence[Pending]) -> None:
        ledger, events = rows_of(batch)
        with tracing.span("spiffe-broker.store.record_issuance", {"spiffe_broker.batch_size": len(batch)}):
            await self._store.record_issuance(ledger, events)

    def start(self) -> None:
        self.tokens.start()
        self.trail.start()

    async def flush(self) -> None:
        await asyncio.gather(self.tokens.flush(), self.trail.flush())

    async def close(self, timeout: float | None = None) -> int:
        """Drain both writers; the number of records lost (0 unless ``timeout`` passed first)."""
        lost = await asyncio.gather(self.tokens.close(timeout), self.trail.close(timeout))
        return sum(lost)


def rows_of(batch: Sequence[Pending]) -> tuple[list[LedgerRow], list[Stamped]]:
    """A batch as ledger rows and audit records, in the order the batch has them: one loop for the batch."""
    ledger: list[LedgerRow] = []
    events: list[Stamped] = []
    for at, what in batch:
        if isinstance(what, tuple):
            claims, kid, audience, scopes, client, bound = what
            jti, exp, aud = claims["jti"], int(claims["exp"]), (audience,)
            ledger.append((jti, kid, str(client.spiffe_id), aud, scopes, bound, int(claims["iat"]), exp))
            body = token_issued_body(jti, kid, str(claims["sub"]), str(claims["client_id"]), aud, scopes, bound,
                                     client.auth_method, exp)  # fmt: skip
            events.append((ISSUED, at, body))
        else:
            events.append((what.event, at, what.body()))
    return ledger, events
