"""The audit journal: hash-chained, append-only records of every security decision and administrative change.

:mod:`broker.audit.journal` declares what the journal needs from a store and the chain rule; the event types,
``audit verify`` and the sinks come next (issue 9, items 4-5).
"""

from broker.audit.journal import GENESIS_HASH, AuditJournalStore, AuditRecord, chain_hash

__all__ = ["GENESIS_HASH", "AuditJournalStore", "AuditRecord", "chain_hash"]
