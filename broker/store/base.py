"""The store as a whole: one object per process with a part per concern, opened and closed in pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Protocol

from broker.apikeys.store import ApiKeyStore
from broker.audit.journal import AuditJournalStore, Stamped
from broker.events import ChangeFeed
from broker.events.revocations import SubjectPattern
from broker.oauth.replay import ReplayCache
from broker.tokens.clients import ClientRegistryStore
from broker.tokens.keystore import KeyMove, KeyRecord, KeyringStore, KeyState
from broker.tokens.ledger import IssuanceLedgerStore, LedgerRow
from broker.tokens.revocation import RevocationLogStore

__all__ = [
    "KEY_COLUMNS",
    "STAMP_COLUMN",
    "TWO_ACTIVE",
    "CompareFailed",
    "Store",
    "audience_json",
    "duplicate_kid",
    "move_statements",
    "moved",
    "prefix_bounds",
    "unknown_kid",
]

# The timestamp each state sets when a key moves into it.
STAMP_COLUMN: dict[KeyState, str] = {
    KeyState.ACTIVE: "activated_at",
    KeyState.RETIRING: "retiring_at",
    KeyState.RETIRED: "retired_at",
    KeyState.REVOKED: "retired_at",
}
KEY_COLUMNS = (
    "kid, algorithm, state, wrapped_key, kek_id, public_jwk, created_at, activated_at, retiring_at, retired_at"
)


def move_statements(placeholder: str) -> dict[KeyState, str]:
    """The compare-and-set ``UPDATE`` per target state, in the engine's parameter style (``?`` or ``%s``)."""
    p = placeholder
    return {
        state: f"UPDATE signing_keys SET state = {p}, {column} = {p} WHERE kid = {p} AND state = {p}"  # noqa: S608
        for state, column in STAMP_COLUMN.items()
    }


class CompareFailed(Exception):
    """A move found its key in another state than expected: the engine rolls the whole change back."""


class Store(Protocol):
    """A migrated, open store. ``close`` releases the worker thread or the pool; it is safe to call twice."""

    @property
    def keyring(self) -> KeyringStore: ...

    @property
    def audit(self) -> AuditJournalStore: ...

    @property
    def changes(self) -> ChangeFeed: ...

    @property
    def ledger(self) -> IssuanceLedgerStore: ...

    @property
    def revocations(self) -> RevocationLogStore: ...

    @property
    def replay(self) -> ReplayCache:
        """The ``jti`` replay cache (RFC 7523 §3 item 7, RFC 9449 §11.1): atomic across every handle on the store."""
        ...

    @property
    def clients(self) -> ClientRegistryStore:
        """The client registry (RFC 7523 §2.2 ``private_key_jwt`` clients); changes bump the ``clients`` topic."""
        ...

    @property
    def apikeys(self) -> ApiKeyStore:
        """The governed API-key exceptions (issue 12); changes bump the ``apikeys`` topic."""
        ...

    migrated_from: int | None
    """The schema version this handle's open migrated from; None if it applied nothing (another replica may have)."""

    async def schema_version(self) -> int: ...

    async def record_issuance(self, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
        """``tokens`` into the issuance ledger and ``events`` at the end of the audit chain, in ONE transaction:
        after a crash the two hold the same tokens. The token endpoint's batches come this way.

        All or nothing: a malformed row (:func:`~broker.tokens.ledger.check_rows`) or a bad event name
        (:func:`~broker.audit.journal.check_stamped`) refuses the whole batch (ValueError) before anything is
        written. A ``jti`` already in the ledger is skipped (the ledger's own rule); the events are appended in
        order, as :meth:`~broker.audit.journal.AuditJournalStore.append_many` appends them.
        """
        ...

    async def close(self) -> None: ...


def audience_json(audience: Sequence[str]) -> str:
    """The ledger's ``audience`` column: a JSON array of strings, the bytes ``json.dumps(list(audience),
    separators=(",", ":"))`` writes."""
    return f"[{','.join(map(encode_basestring_ascii, audience))}]"


def moved(record: KeyRecord, move: KeyMove, at: datetime) -> KeyRecord:
    """``record`` after ``move`` at ``at``: the new state and the timestamp that state sets."""
    column = STAMP_COLUMN[move.new]
    if column == "activated_at":
        return replace(record, state=move.new, activated_at=at)
    if column == "retiring_at":
        return replace(record, state=move.new, retiring_at=at)
    return replace(record, state=move.new, retired_at=at)


TWO_ACTIVE = "the change would leave two active signing keys: move the active key to retiring in the same change"


def unknown_kid(kid: str) -> str:
    return f"no signing key with kid {kid!r}: list the keys and name one of them"


def duplicate_kid(kid: str) -> str:
    return f"a signing key with kid {kid!r} already exists: generate a new kid"


def prefix_bounds(pattern: SubjectPattern) -> tuple[str, str]:
    """The subjects under a prefix pattern as a half-open range in code point order: ``[key, high)``.

    ``key`` ends in ``/``; ``high`` is ``key`` with that ``/`` raised to the next code point (``0``). A string is in
    the range exactly when it starts with ``key``, so no wildcard character (``%``, ``_``) can widen the match,
    and an index on the subject serves it (SQLite's BINARY collation, PostgreSQL's ``"C"``: both code point order).
    """
    key = pattern.key
    if not pattern.is_prefix or not key.endswith("/"):
        raise ValueError(f"{pattern} is not a prefix pattern")
    return key, key[:-1] + chr(ord("/") + 1)
