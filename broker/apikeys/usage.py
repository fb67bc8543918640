"""What the sidecars report of their egress (``POST /v1/apikeys/report``, :class:`~broker.apikeys.grant.EgressReport`):
uses into the store's aggregated rows and the audit journal, refusals into the audit journal.

:meth:`UsageRecorder.record`, for one report from an authenticated SPIFFE ID, in this order:

1. **refusals** are merged by ``(name, target, reason)`` (a count, the first and last time) and queued on the
   audit trail as ``apikey.egress_refused``; ``placeholder_to_other_target`` (the app sent an exception's
   placeholder somewhere the exception does not cover) is marked ``suspected_exfiltration`` and logged at WARNING.
   A trail with no room refuses the whole report (503: the sidecar sends it again; the journal may then hold a
   refusal twice, never not at all);
2. **uses** of exceptions the reporter may use are audited as ``apikey.used``, one record per report and
   ``(name, version, target)`` with its count and last time (so the journal holds every use, aggregated), and queued
   on a :class:`~broker._batch.BatchWriter`, whose writes
   merge rows of the same ``(name, workload, version, target)`` before one
   :meth:`~broker.apikeys.store.ApiKeyStore.record_uses` (group commit: the hot path never writes a row per
   request). Uses of an exception the reporter is not allowed are dropped (a report cannot make another
   workload's exception look used). A time in the future (a sidecar's clock ahead) counts as now.

So the last use per workload in the store is exact to within the sidecar's report interval plus the batch window
(:data:`DEFAULT_FLUSH_INTERVAL`). What a crash of the token service loses is the batch window's uses (the
group commit's rule, :mod:`broker._batch`); a batch retried after a lost commit answer counts its uses twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from broker._batch import BatchWriter
from broker.apikeys.decision import GrantAudit
from broker.apikeys.grant import EgressRefusal, EgressReport
from broker.apikeys.model import ApiKeyException, UseRecord
from broker.apikeys.store import ApiKeyStore
from broker.audit.apikey_events import ApiKeyEgressRefused, ApiKeyUsed
from broker.errors import TemporarilyUnavailableError

__all__ = ["DEFAULT_FLUSH_INTERVAL", "EXFILTRATION_REASON", "UsageRecorder", "merge_uses"]

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL = 5.0  # seconds a use waits to be merged with others before it is written
EXFILTRATION_REASON = "placeholder_to_other_target"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_Key = tuple[str, str, int, str]
_PRINTABLE_ONLY = re.compile(r"[^\x20-\x7e]")


def _is_origin_of(target: str, record: ApiKeyException) -> bool:
    """``target`` is ``https://host:port`` (what a sidecar reports a use against) and the exception covers that
    host and port: a report cannot invent targets for an exception."""
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or parts.path or parts.query or parts.fragment or parts.username or port is None:
        return False
    host = parts.hostname or ""
    return record.target.matches("https", host, port, record.target.path_prefix)


def merge_uses(rows: Sequence[UseRecord]) -> list[UseRecord]:
    """One row per ``(name, spiffe_id, version, target)``: counts added, the later ``last_used_at`` kept."""
    merged: dict[_Key, UseRecord] = {}
    for row in rows:
        key = (row.name, row.spiffe_id, row.version, row.target)
        known = merged.get(key)
        merged[key] = row if known is None else replace(
            known, count=known.count + row.count, last_used_at=max(known.last_used_at, row.last_used_at)
        )  # fmt: skip
    return list(merged.values())


class UsageRecorder:
    """Records sidecars' reports (see the module docstring). :meth:`start` it, :meth:`close` it."""

    def __init__(
        self,
        store: ApiKeyStore,
        audit: GrantAudit,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        capacity: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._audit, self._clock = store, audit, clock
        self.writer: BatchWriter[UseRecord] = BatchWriter(
            self._write, name="apikey-uses", batch_window=flush_interval, batch_max=4096, capacity=capacity
        )

    async def _write(self, rows: Sequence[UseRecord]) -> None:
        await self._store.record_uses(merge_uses(rows))

    async def record(self, spiffe_id: str, report: EgressReport) -> None:
        """Audit the refusals and queue the uses of one report (503 if either cannot be taken now)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        rows = await self._uses(spiffe_id, report, now)
        if not self.writer.has_room(len(rows)):
            raise TemporarilyUnavailableError("the usage writer is full (the store is slow or down): report again")
        self._audit_refusals(spiffe_id, report.refusals, now)
        self._audit_uses(rows)
        for row in rows:
            self.writer.submit(row)

    async def _uses(self, spiffe_id: str, report: EgressReport, now: datetime) -> list[UseRecord]:
        if not report.uses:
            return []
        allowed = {r.name: r for r in await self._store.list_all() if r.allows(spiffe_id)}
        rows = [UseRecord(u.name, spiffe_id, u.version, u.target, u.count, min(u.last_used_at, now))
                for u in report.uses if u.name in allowed and _is_origin_of(u.target, allowed[u.name])]  # fmt: skip
        if len(rows) < len(report.uses):
            log.warning("apikey report from %s: %d uses of exceptions it may not use, or of targets they do not "
                        "cover, were dropped", spiffe_id, len(report.uses) - len(rows))  # fmt: skip
        return rows

    def _audit_refusals(self, spiffe_id: str, refusals: Sequence[EgressRefusal], now: datetime) -> None:
        merged: dict[tuple[str | None, str, str], list[datetime]] = {}
        for refusal in refusals:
            name = refusal.name if refusal.name is not None and _NAME.fullmatch(refusal.name) else None
            target = _PRINTABLE_ONLY.sub("?", refusal.target)  # the app chose it: no control characters kept
            merged.setdefault((name, target, refusal.reason), []).append(min(refusal.at, now))
        for (name, target, reason), times in merged.items():
            suspected = reason == EXFILTRATION_REASON
            event = ApiKeyEgressRefused(spiffe_id, name, target, reason, len(times), int(min(times).timestamp()),
                                        int(max(times).timestamp()), suspected)  # fmt: skip
            if suspected:
                log.warning("possible exfiltration attempt: %s sent the placeholder of %s to a target it does not "
                            "cover (%d requests refused; target in the audit journal)", spiffe_id, name or "-",
                            len(times))  # fmt: skip
            if not self._audit.record(event):
                log.error("apikey report from %s: the audit trail is full; the report is refused", spiffe_id)
                raise TemporarilyUnavailableError("the audit journal cannot take the report's refusals now: resend")

    def _audit_uses(self, rows: Sequence[UseRecord]) -> None:
        for row in merge_uses(rows):
            event = ApiKeyUsed(row.spiffe_id, row.name, row.version, row.target, row.count,
                               int(row.last_used_at.timestamp()))  # fmt: skip
            if not self._audit.record(event):
                log.error("apikey report from %s: the audit trail is full; the report is refused", row.spiffe_id)
                raise TemporarilyUnavailableError("the audit journal cannot take the report's uses now: resend")

    def start(self) -> None:
        self.writer.start()

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self, timeout: float | None = None) -> int:
        """Write what is queued and stop; the number of use rows lost (0 unless ``timeout`` passed first)."""
        return await self.writer.close(timeout)
