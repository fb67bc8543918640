"""The token endpoint's audit hook (:class:`broker.tokens.endpoint.Audit`): the issuance ledger and the audit trail.

* A token issued: a :class:`~broker.tokens.ledger.LedgerEntry` to the ledger's batch writer and a ``token.issued``
  event to the audit trail, both queued without waiting on the store (:mod:`broker._batch`). When either cannot
  take it (the store is down or behind and the queue is full) the request fails closed: the hook raises
  ``temporarily_unavailable`` (503) and the token is never returned, so no token goes out unrecorded.
* A request refused: a ``token.refused`` event with the error code, the client's SPIFFE ID when it was
  authenticated, never the request. If the trail is full then, the refusal stands (it was already refused); the
  lost event is logged and counted in :attr:`Recorder.refusals_not_recorded`.

What a crash can lose is one batch window of each writer (see :mod:`broker._batch`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from broker._batch import BatchWriter
from broker.audit.events import TokenIssued, TokenRefused
from broker.audit.trail import AuditTrail
from broker.errors import OAuthError, TemporarilyUnavailableError
from broker.store.base import Store
from broker.tokens.issuer import AuthenticatedClient, IssuedToken
from broker.tokens.ledger import LedgerEntry

__all__ = ["BEHIND", "Recorder"]

log = logging.getLogger(__name__)

BEHIND = "the issuance ledger or the audit trail cannot keep up with the store: retry shortly"


class Recorder:
    """Implements :class:`broker.tokens.endpoint.Audit`; :meth:`start` it, and :meth:`close` it to drain."""

    def __init__(self, *, ledger: BatchWriter[LedgerEntry], trail: AuditTrail) -> None:
        self.ledger = ledger
        self.trail = trail
        self.refusals_not_recorded = 0

    @classmethod
    def for_store(cls, store: Store, *, batch_window: float = 0.05, batch_max: int = 512) -> Recorder:
        """Writers for ``store``'s ledger and journal, each queueing at most 16 batches."""
        capacity = 16 * batch_max
        ledger = BatchWriter(
            store.ledger.record, name="ledger", batch_window=batch_window, batch_max=batch_max, capacity=capacity
        )
        trail = AuditTrail(store.audit, batch_window=batch_window, batch_max=batch_max, capacity=capacity)
        return cls(ledger=ledger, trail=trail)

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None:
        if not (self.ledger.has_room() and self.trail.has_room()):
            raise TemporarilyUnavailableError(BEHIND)
        entry, event = ledger_entry(client, token), issued_event(client, token)
        # Both had room and nothing ran in between (one thread, no await): both accept.
        if not (self.ledger.submit(entry) and self.trail.record(event)):
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
        if not self.trail.record(event):
            self.refusals_not_recorded += 1
            log.warning("audit trail full: a token.refused event (%s) was not recorded", error.error)

    def start(self) -> None:
        self.ledger.start()
        self.trail.start()

    async def flush(self) -> None:
        await asyncio.gather(self.ledger.flush(), self.trail.flush())

    async def close(self, timeout: float | None = None) -> int:
        """Drain both writers; the number of records lost (0 unless ``timeout`` passed first)."""
        lost = await asyncio.gather(self.ledger.close(timeout), self.trail.close(timeout))
        return sum(lost)


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _binding(client: AuthenticatedClient) -> str:
    binding = client.binding()
    return f"{binding.member}={binding.value}"


def ledger_entry(client: AuthenticatedClient, token: IssuedToken) -> LedgerEntry:
    return LedgerEntry(
        jti=token.jti,
        kid=token.kid,
        subject=str(client.spiffe_id),
        audience=(token.audience,),
        scope=token.scopes,
        binding=_binding(client),
        issued_at=_instant(int(token.claims["iat"])),
        expires_at=_instant(int(token.claims["exp"])),
    )


def issued_event(client: AuthenticatedClient, token: IssuedToken) -> TokenIssued:
    return TokenIssued(
        jti=token.jti,
        kid=token.kid,
        sub=str(token.claims["sub"]),
        client_id=str(token.claims["client_id"]),
        aud=(token.audience,),
        scope=token.scopes,
        binding=_binding(client),
        auth_method=client.auth_method,
        exp=int(token.claims["exp"]),
    )
