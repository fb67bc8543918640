"""Plan and apply: make the SPIRE Server's entries owned by the broker match ``workloads.yaml``.

Ownership is an entry ID prefix, as spire-controller-manager's ``entryIDPrefix``: ``apply`` creates entries
with the ID ``<entry_id_prefix><uuid4>`` and never updates or deletes an entry without that prefix. Desired
entries (node aliases and workloads) are matched to owned entries by identity, (SPIFFE ID, parent ID, sorted
selectors), which is how SPIRE itself tells entries apart ("similar" entries are refused with
ALREADY_EXISTS); an identity taken by an entry the broker does not own is an error, never a takeover.

``hint`` is compared only for workloads whose file entry sets it: a hint an operator set on the server
survives an apply. Entries from earlier versions, marked ``hint: spiffe-broker`` and no prefix, are migrated:
one whose identity is still wanted is replaced (deleted, then re-created with a prefixed ID, since SPIRE
cannot change an entry's ID and refuses two similar entries), the others are deleted.

``plan`` also warns about any parent that is neither a node alias (in the file, or on the server) nor an
agent the server has attested: such an entry matches nothing until an agent with that ID appears.

``apply`` writes in the order create, replace, update, delete (so an identity change never leaves a gap), in
batches, and checks every per-entry status: a failure stops the apply with an error naming the entries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from broker.registration.entries import (
    LEGACY_HINT,
    MANAGED_FIELDS,
    Entry,
    EntryServer,
    EntryStatus,
    entry_for_alias,
    entry_for_workload,
    new_entry_id,
    server_id,
)
from broker.registration.errors import RegistrationError
from broker.registration.model import WorkloadsFile

__all__ = [
    "ApplyResult",
    "Create",
    "Delete",
    "FieldChange",
    "Plan",
    "Replace",
    "Update",
    "apply",
    "plan",
    "render_plan",
]

BATCH_SIZE = 50
_Identity = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    old: object
    new: object


@dataclass(frozen=True, slots=True)
class Create:
    """``entry`` has no ``id`` yet: :func:`apply` gives it a fresh prefixed one."""

    workload: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Replace:
    """A legacy entry (``hint: spiffe-broker``, no prefix) that is still wanted: delete it, create ``entry``."""

    workload: str
    old: Entry
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
    replaces: tuple[Replace, ...] = ()
    warnings: tuple[str, ...] = ()
    entry_id_prefix: str = ""

    @property
    def has_changes(self) -> bool:
        return bool(self.creates or self.replaces or self.updates or self.deletes)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Entry IDs written by :func:`apply` (a replacement counts as one delete and one create)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Desired:
    label: str  # "web", or "node alias demo-cluster"
    entry: Entry
    fields: tuple[str, ...]  # the fields kept equal to the file


@dataclass
class _Current:
    """The server's entries, sorted by who owns them."""

    owned: dict[_Identity, Entry]
    legacy: dict[_Identity, Entry]
    foreign: dict[_Identity, Entry]
    extra: list[Entry]  # owned or legacy duplicates of one identity: deleted
    everything: list[Entry]


def _desired(file: WorkloadsFile) -> list[_Desired]:
    unhinted = tuple(f for f in MANAGED_FIELDS if f != "hint")
    out = [
        _Desired(f"node alias {a.name}", entry_for_alias(a, file.trust_domain), MANAGED_FIELDS)
        for a in file.node_aliases
    ]
    for workload in file.workloads:
        fields = MANAGED_FIELDS if workload.hint is not None else unhinted
        out.append(_Desired(workload.name, entry_for_workload(workload), fields))
    return out


def _current(entries: Iterable[Entry], prefix: str) -> _Current:
    current = _Current({}, {}, {}, [], [])
    for entry in entries:
        current.everything.append(entry)
        if entry.owned_by(prefix):
            bucket = current.owned
        elif entry.legacy_managed:
            bucket = current.legacy
        else:
            current.foreign.setdefault(entry.identity, entry)
            continue
        if entry.identity in bucket:
            current.extra.append(entry)
        else:
            bucket[entry.identity] = entry
    return current


def _diff(current: Entry, desired: _Desired) -> tuple[FieldChange, ...]:
    return tuple(
        FieldChange(name, getattr(current, name), getattr(desired.entry, name))
        for name in desired.fields
        if getattr(current, name) != getattr(desired.entry, name)
    )


def plan(desired: WorkloadsFile, server: EntryServer) -> Plan:
    """Compare ``desired`` with the server's entries; read-only."""
    prefix = desired.entry_id_prefix
    current = _current(server.list_entries(), prefix)
    creates: list[Create] = []
    replaces: list[Replace] = []
    updates: list[Update] = []
    unchanged: list[str] = []
    wanted: set[_Identity] = set()
    for want in _desired(desired):
        identity = want.entry.identity
        wanted.add(identity)
        if (owned := current.owned.get(identity)) is not None:
            if changes := _diff(owned, want):
                updates.append(Update(want.label, replace(want.entry, id=owned.id), changes))
            else:
                unchanged.append(want.label)
        elif (legacy := current.legacy.get(identity)) is not None:
            replaces.append(Replace(want.label, legacy, want.entry))
        elif (other := current.foreign.get(identity)) is not None:
            raise RegistrationError(
                f"{_what(want.label)}: {other.describe()} already exists and is not managed by spiffe-broker "
                f"(its ID does not start with {prefix!r}); delete it or change the file"
            )
        else:
            creates.append(Create(want.label, want.entry))
    stale = [e for i, e in (*current.owned.items(), *current.legacy.items()) if i not in wanted] + current.extra
    deletes = tuple(Delete(e) for e in sorted(stale, key=lambda e: (e.spiffe_id, e.id)))
    warnings = _parent_warnings(desired, current.everything, server)
    return Plan(tuple(creates), tuple(updates), deletes, tuple(unchanged), tuple(replaces), warnings, prefix)


def _what(label: str) -> str:
    return label if label.startswith("node alias ") else f"workload {label!r}"


def _parent_warnings(file: WorkloadsFile, entries: list[Entry], server: EntryServer) -> tuple[str, ...]:
    """Parents that are neither node aliases (file or server) nor attested agents (SPIRE Agent.GetAgent).

    A node alias on the server is an entry parented to ``spiffe://<td>/spire/server``, or what
    ``spire-server token generate -spiffeID`` makes: an entry parented to a join-token agent ID that selects
    exactly ``spiffe_id:<that agent ID>``. Only IDs under ``/spire/agent/`` can be agents, so only they are
    looked up.
    """
    root = server_id(file.trust_domain)
    known = {str(a.spiffe_id) for a in file.node_aliases}
    for entry in entries:
        if entry.parent_id == root or [str(s) for s in entry.selectors] == [f"spiffe_id:{entry.parent_id}"]:
            known.add(entry.spiffe_id)
    parents = [(w.name, str(w.parent_id)) for w in file.workloads]
    parents += [(f"node alias {a.name}", str(a.parent_id)) for a in file.node_aliases if a.parent_id is not None]
    unknown = sorted({parent for _, parent in parents} - known)
    agent_prefix = f"spiffe://{file.trust_domain.name}/spire/agent/"
    agents = server.known_agents([p for p in unknown if p.startswith(agent_prefix)]) if unknown else set()
    return tuple(
        f"{_what(label)}: parent_id {parent} is neither a node alias (in this file or on the server) "
        "nor an agent the server knows: the entry matches no agent until one attests with that ID"
        for label, parent in parents
        if parent in unknown and parent not in agents
    )


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
                name = f"{_what(item.workload)} " if not isinstance(item, Delete) else ""
                failed.append(f"{name}{item.entry.describe()}: {status}")
    if failed:
        detail = "; ".join(failed)
        raise RegistrationError(f"apply stopped: {len(failed)} of {len(items)} {verb}s failed: {detail}")
    return done


def _creator(server: EntryServer) -> Callable[[Sequence[_Item]], list[EntryStatus]]:
    return lambda chunk: server.batch_create_entries([c.entry for c in chunk])


def _deleter(server: EntryServer) -> Callable[[Sequence[_Item]], list[EntryStatus]]:
    return lambda chunk: server.batch_delete_entries([d.entry.id for d in chunk])


def _updater(server: EntryServer, fields: frozenset[str]) -> Callable[[Sequence[_Item]], list[EntryStatus]]:
    return lambda chunk: server.batch_update_entries([u.entry for u in chunk], fields)


def _with_ids(creates: Iterable[Create | Replace], prefix: str) -> list[Create]:
    if not prefix:
        raise RegistrationError("apply needs the plan's entry ID prefix (make plans with plan())")
    return [Create(c.workload, replace(c.entry, id=new_entry_id(prefix))) for c in creates]


def apply(plan: Plan, server: EntryServer, *, batch_size: int = BATCH_SIZE) -> ApplyResult:
    """Carry out ``plan``: creates, replacements (delete the legacy entry, then create), updates (one batch
    call per set of changed fields), then deletes. New entries get ``<prefix><uuid4>`` IDs."""
    created = _run("create", _with_ids(plan.creates, plan.entry_id_prefix), _creator(server), batch_size)
    replaced = _run("delete", [Delete(r.old) for r in plan.replaces], _deleter(server), batch_size)
    created += _run("create", _with_ids(plan.replaces, plan.entry_id_prefix), _creator(server), batch_size)
    by_fields: dict[frozenset[str], list[Update]] = defaultdict(list)
    for update in plan.updates:
        by_fields[update.fields].append(update)
    updated: list[str] = []
    for fields, group in sorted(by_fields.items(), key=lambda kv: sorted(kv[0])):
        updated += _run("update", group, _updater(server, fields), batch_size)
    deleted = replaced + _run("delete", plan.deletes, _deleter(server), batch_size)
    return ApplyResult(tuple(created), tuple(updated), tuple(deleted))


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str) and not value:
        return '""'
    return str(value).lower() if isinstance(value, bool) else str(value)


def _ttl(seconds: int) -> str:
    return str(seconds) if seconds else "0 (server default)"


def _created_lines(label: str, entry: Entry, sign: str = "+") -> list[str]:
    lines = [f"  {sign} {label}: {entry.describe()}"]
    lines.append(f"      x509_svid_ttl={_ttl(entry.x509_svid_ttl)} jwt_svid_ttl={_ttl(entry.jwt_svid_ttl)}")
    extras = [
        f"{name}={_value(getattr(entry, name))}"
        for name in ("dns_names", "hint", "federates_with", "admin", "downstream")
        if getattr(entry, name)
    ]
    if extras:
        lines.append("      " + " ".join(extras))
    return lines


def render_plan(plan: Plan) -> str:
    """A human-readable plan, one line per entry and one indented line per changed field (not the warnings:
    callers show ``plan.warnings`` apart, the CLI on stderr)."""
    lines = [
        f"Plan: {len(plan.creates)} to create, {len(plan.updates)} to update, "
        f"{len(plan.deletes)} to delete, {len(plan.unchanged)} unchanged"
        + (f", {len(plan.replaces)} to replace (migrating from hint {LEGACY_HINT!r})." if plan.replaces else ".")
    ]
    for create in plan.creates:
        lines.extend(_created_lines(create.workload, create.entry))
    for item in plan.replaces:
        lines.extend(_created_lines(item.workload, item.entry, "-/+"))
        lines.append(f"      replaces {item.old.id} (hint {item.old.hint!r}; SPIRE cannot change an entry's ID)")
    for update in plan.updates:
        lines.append(f"  ~ {update.workload}: {update.entry.describe()}")
        lines.extend(f"      {c.name}: {_value(c.old)} -> {_value(c.new)}" for c in update.changes)
    lines.extend(f"  - {delete.entry.describe()}" for delete in plan.deletes)
    if not plan.has_changes:
        lines.append("No changes: the SPIRE Server's managed entries match the workloads file.")
    return "\n".join(lines) + "\n"
