"""Plan and apply: make the SPIRE Server's managed entries match ``workloads.yaml``.

Desired workloads are matched to existing entries by identity, (SPIFFE ID, parent ID, sorted selectors),
which is how SPIRE itself tells entries apart ("similar" entries are refused with ALREADY_EXISTS). Only
entries whose ``hint`` is ``spiffe-broker`` are ever updated or deleted; a workload whose identity is taken by
an entry the broker does not manage is an error, never a takeover.

``apply`` writes in the order create, update, delete (so an identity change never leaves a gap), in batches,
and checks every per-entry status: a failure stops the apply with an error naming the entries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from broker.registration.entries import (
    MANAGED_FIELDS,
    MANAGED_HINT,
    Entry,
    EntryServer,
    EntryStatus,
    entry_for_workload,
)
from broker.registration.errors import RegistrationError
from broker.registration.model import WorkloadsFile

__all__ = ["ApplyResult", "Create", "Delete", "FieldChange", "Plan", "Update", "apply", "plan", "render_plan"]

BATCH_SIZE = 50


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    old: object
    new: object


@dataclass(frozen=True, slots=True)
class Create:
    workload: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Update:
    """``entry`` is the desired entry carrying the existing entry's ``id``."""

    workload: str
    entry: Entry
    changes: tuple[FieldChange, ...]

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(c.name for c in self.changes)


@dataclass(frozen=True, slots=True)
class Delete:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Plan:
    creates: tuple[Create, ...] = ()
    updates: tuple[Update, ...] = ()
    deletes: tuple[Delete, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Entry IDs written by :func:`apply`."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


def _diff(current: Entry, desired: Entry) -> tuple[FieldChange, ...]:
    return tuple(
        FieldChange(name, getattr(current, name), getattr(desired, name))
        for name in MANAGED_FIELDS
        if getattr(current, name) != getattr(desired, name)
    )


def plan(desired: WorkloadsFile, server: EntryServer) -> Plan:
    """Compare ``desired`` with the server's entries; read-only."""
    managed: dict[tuple[str, str, tuple[str, ...]], Entry] = {}
    unmanaged: dict[tuple[str, str, tuple[str, ...]], Entry] = {}
    duplicates: list[Entry] = []
    for entry in server.list_entries():
        if not entry.managed:
            unmanaged.setdefault(entry.identity, entry)
        elif entry.identity in managed:
            duplicates.append(entry)
        else:
            managed[entry.identity] = entry
    creates: list[Create] = []
    updates: list[Update] = []
    unchanged: list[str] = []
    wanted: set[tuple[str, str, tuple[str, ...]]] = set()
    for workload in desired.workloads:
        want = entry_for_workload(workload)
        wanted.add(want.identity)
        current = managed.get(want.identity)
        if current is None and want.identity in unmanaged:
            other = unmanaged[want.identity]
            raise RegistrationError(
                f"workload {workload.name!r}: {other.describe()} already exists and is not managed by "
                f"spiffe-broker (its hint is not {MANAGED_HINT!r}); delete it or change the workload"
            )
        if current is None:
            creates.append(Create(workload.name, want))
        elif changes := _diff(current, want):
            updates.append(Update(workload.name, replace(want, id=current.id), changes))
        else:
            unchanged.append(workload.name)
    stale = [e for identity, e in managed.items() if identity not in wanted] + duplicates
    deletes = tuple(Delete(e) for e in sorted(stale, key=lambda e: (e.spiffe_id, e.id)))
    return Plan(tuple(creates), tuple(updates), deletes, tuple(unchanged))


_Item = Create | Update | Delete


def _chunks(items: Sequence[_Item], size: int) -> list[Sequence[_Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run(
    verb: str,
    items: Sequence[_Item],
    call: Callable[[Sequence[_Item]], list[EntryStatus]],
    batch_size: int,
) -> list[str]:
    """Run one phase in batches; raise naming every entry whose status is not OK."""
    done: list[str] = []
    failed: list[str] = []
    for chunk in _chunks(items, batch_size):
        for item, status in zip(chunk, call(chunk), strict=True):
            if status.ok:
                done.append(status.entry_id or item.entry.id)
            else:
                name = f"workload {item.workload!r} " if not isinstance(item, Delete) else ""
                failed.append(f"{name}{item.entry.describe()}: {status}")
    if failed:
        detail = "; ".join(failed)
        raise RegistrationError(f"apply stopped: {len(failed)} of {len(items)} {verb}s failed: {detail}")
    return done


def _updater(server: EntryServer, fields: frozenset[str]) -> Callable[[Sequence[_Item]], list[EntryStatus]]:
    return lambda chunk: server.batch_update_entries([u.entry for u in chunk], fields)


def apply(plan: Plan, server: EntryServer, *, batch_size: int = BATCH_SIZE) -> ApplyResult:
    """Carry out ``plan``: creates, then updates (one batch call per set of changed fields), then deletes."""
    created = _run(
        "create",
        plan.creates,
        lambda chunk: server.batch_create_entries([c.entry for c in chunk]),
        batch_size,
    )
    by_fields: dict[frozenset[str], list[Update]] = defaultdict(list)
    for update in plan.updates:
        by_fields[update.fields].append(update)
    updated: list[str] = []
    for fields, group in sorted(by_fields.items(), key=lambda kv: sorted(kv[0])):
        updated += _run("update", group, _updater(server, fields), batch_size)
    deleted = _run(
        "delete",
        plan.deletes,
        lambda chunk: server.batch_delete_entries([d.entry.id for d in chunk]),
        batch_size,
    )
    return ApplyResult(tuple(created), tuple(updated), tuple(deleted))


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_plan(plan: Plan) -> str:
    """A human-readable plan, one line per entry and one indented line per changed field."""
    lines = [
        f"Plan: {len(plan.creates)} to create, {len(plan.updates)} to update, "
        f"{len(plan.deletes)} to delete, {len(plan.unchanged)} unchanged."
    ]
    for create in plan.creates:
        entry = create.entry
        lines.append(f"  + {create.workload}: {entry.describe()}")
        lines.append(f"      x509_svid_ttl={entry.x509_svid_ttl} jwt_svid_ttl={entry.jwt_svid_ttl}")
        if entry.dns_names:
            lines.append(f"      dns_names={_value(entry.dns_names)}")
    for update in plan.updates:
        lines.append(f"  ~ {update.workload}: {update.entry.describe()}")
        lines.extend(f"      {c.name}: {_value(c.old)} -> {_value(c.new)}" for c in update.changes)
    lines.extend(f"  - {delete.entry.describe()}" for delete in plan.deletes)
    if not plan.has_changes:
        lines.append("No changes: the SPIRE Server's managed entries match the workloads file.")
    return "\n".join(lines) + "\n"
