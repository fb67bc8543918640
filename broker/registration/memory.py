"""An in-memory :class:`~broker.registration.entries.EntryServer` that behaves like SPIRE's entry API.

Like SPIRE it refuses a second entry with the same (SPIFFE ID, parent ID, selectors) with ALREADY_EXISTS,
answers NOT_FOUND for unknown IDs, applies updates through a field mask and bumps ``revision_number``. It
records every write so tests can assert exactly which entries a call touched, and can be told to fail.
A caller-chosen ``id`` is kept, and one already in use is refused with ALREADY_EXISTS, as SPIRE does.
``agents`` are the agent IDs :meth:`known_agents` reports as attested.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

from broker.registration.entries import ALREADY_EXISTS, NOT_FOUND, OK, Entry, EntryStatus

__all__ = ["InMemoryEntryServer"]


class InMemoryEntryServer:
    """Entries in a dict; ``writes`` logs ``("create"|"update"|"delete", entry_id)`` in call order."""

    def __init__(self, entries: Iterable[Entry] = (), *, agents: Iterable[str] = ()) -> None:
        self._entries: dict[str, Entry] = {}
        self.agents = set(agents)
        self.agent_lookups: list[str] = []
        self._ids = itertools.count(1)
        self.writes: list[tuple[str, str]] = []
        self.failures: dict[str, EntryStatus] = {}  # SPIFFE ID -> status to answer instead of writing
        self.batch_sizes: list[int] = []
        for entry in entries:
            self._insert(entry)

    def _insert(self, entry: Entry) -> Entry:
        stored = replace(entry, id=entry.id or f"entry-{next(self._ids)}", revision_number=0)
        self._entries[stored.id] = stored
        return stored

    def get(self, entry_id: str) -> Entry:
        return self._entries[entry_id]

    def list_entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.id)

    def batch_create_entries(self, entries: Sequence[Entry]) -> list[EntryStatus]:
        self.batch_sizes.append(len(entries))
        out: list[EntryStatus] = []
        for entry in entries:
            if entry.spiffe_id in self.failures:
                out.append(self.failures[entry.spiffe_id])
                continue
            clash = next((e for e in self._entries.values() if e.identity == entry.identity), None)
            if entry.id and entry.id in self._entries:
                out.append(EntryStatus(ALREADY_EXISTS, "entry ID already exists", entry.id))
                continue
            if clash is not None:
                out.append(EntryStatus(ALREADY_EXISTS, "similar entry already exists", clash.id))
                continue
            stored = self._insert(entry)
            self.writes.append(("create", stored.id))
            out.append(EntryStatus(OK, "OK", stored.id))
        return out

    def batch_update_entries(self, entries: Sequence[Entry], fields: Collection[str]) -> list[EntryStatus]:
        self.batch_sizes.append(len(entries))
        out: list[EntryStatus] = []
        for entry in entries:
            current = self._entries.get(entry.id)
            if entry.spiffe_id in self.failures:
                out.append(self.failures[entry.spiffe_id])
            elif current is None:
                out.append(EntryStatus(NOT_FOUND, "entry not found", entry.id))
            else:
                changes = {name: getattr(entry, name) for name in fields}
                updated = replace(current, **changes, revision_number=current.revision_number + 1)
                self._entries[entry.id] = updated
                self.writes.append(("update", entry.id))
                out.append(EntryStatus(OK, "OK", entry.id))
        return out

    def batch_delete_entries(self, ids: Sequence[str]) -> list[EntryStatus]:
        self.batch_sizes.append(len(ids))
        out: list[EntryStatus] = []
        for entry_id in ids:
            current = self._entries.get(entry_id)
            if current is not None and current.spiffe_id in self.failures:
                out.append(self.failures[current.spiffe_id])
            elif current is None:
                out.append(EntryStatus(NOT_FOUND, "entry not found", entry_id))
            else:
                del self._entries[entry_id]
                self.writes.append(("delete", entry_id))
                out.append(EntryStatus(OK, "OK", entry_id))
        return out

    def known_agents(self, ids: Collection[str]) -> set[str]:
        self.agent_lookups.extend(ids)
        return {agent_id for agent_id in ids if agent_id in self.agents}
