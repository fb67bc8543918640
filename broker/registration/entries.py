"""Registration entries as the broker sees them, and the small seam to a SPIRE Server (``EntryServer``).

Mirrors ``spire.api.types.Entry`` (spire-api-sdk ``proto/spire/api/types/entry.proto``) in plain Python. The
real implementation is :class:`broker.registration.client.EntryClient` (SPIRE Server API over the admin
socket); :class:`broker.registration.memory.InMemoryEntryServer` is the in-memory one for tests.

Ownership is marked the way spire-controller-manager marks it (its ``entryIDPrefix``): the broker creates
its entries with a client-chosen ID, ``<prefix><uuid4>`` (SPIRE's ``BatchCreateEntry`` keeps a caller-set
``Entry.id``), and updates or deletes only entries whose ID carries the prefix. ``hint``, the field workloads
use to choose among SVIDs (SPIFFE Workload API, ``X509SVID.hint``), stays the operator's. Entries written by
earlier versions, marked ``hint: spiffe-broker`` (:data:`LEGACY_HINT`), are migrated by ``plan``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

from broker.identity.spiffeid import TrustDomain
from broker.registration.model import DEFAULT_ENTRY_ID_PREFIX, NodeAlias, Selector, Workload

__all__ = [
    "DEFAULT_ENTRY_ID_PREFIX",
    "LEGACY_HINT",
    "MANAGED_FIELDS",
    "Entry",
    "EntryServer",
    "EntryStatus",
    "entry_for_alias",
    "entry_for_workload",
    "new_entry_id",
    "server_id",
]

LEGACY_HINT = "spiffe-broker"
# The entry IDs SPIRE Server assigns itself: a lowercase UUID (never owned by the broker, whatever the prefix).
_SPIRE_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# google.rpc.Code values carried by spire.api.types.Status (google/rpc/code.proto).
OK = 0
NOT_FOUND = 5
ALREADY_EXISTS = 6
_CODE_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """A SPIRE registration entry. ``id`` and ``revision_number`` are the server's (empty/0 before create)."""

    spiffe_id: str
    parent_id: str
    selectors: tuple[Selector, ...]
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    dns_names: tuple[str, ...] = ()
    hint: str = ""
    admin: bool = False
    downstream: bool = False
    store_svid: bool = False
    federates_with: tuple[str, ...] = ()
    expires_at: int = 0
    jwt_svid_include_jti: bool = False
    id: str = ""
    revision_number: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "selectors", tuple(sorted(self.selectors)))
        object.__setattr__(self, "federates_with", tuple(sorted(self.federates_with)))

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...]]:
        """(spiffe_id, parent_id, sorted selectors): SPIRE refuses two entries with the same identity."""
        return self.spiffe_id, self.parent_id, tuple(str(s) for s in self.selectors)

    def owned_by(self, prefix: str) -> bool:
        """Whether this entry's ID carries ``prefix`` (spire-controller-manager's ``entryIDPrefix`` rule).

        An ID that is a bare UUID, as SPIRE assigns to entries created without an ID, is never owned, whatever
        the prefix: fail closed, ``apply`` must not delete entries it did not create.
        """
        return bool(prefix) and self.id.startswith(prefix) and not _SPIRE_UUID.fullmatch(self.id)

    @property
    def legacy_managed(self) -> bool:
        """Written by a broker that marked ownership with ``hint: spiffe-broker``."""
        return self.hint == LEGACY_HINT

    def describe(self) -> str:
        """One line naming the entry (never any secret: entries hold none)."""
        selectors = ",".join(str(s) for s in self.selectors)
        where = f" (entry {self.id})" if self.id else ""
        return f"{self.spiffe_id} parent={self.parent_id} selectors={selectors}{where}"


# Every field that plan() keeps equal to workloads.yaml, apart from the identity fields. Changing an identity
# field makes a different entry (delete + create), as SPIRE matches entries by identity.
MANAGED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Entry) if f.name not in ("spiffe_id", "parent_id", "selectors", "id", "revision_number")
)


@dataclass(frozen=True, slots=True)
class EntryStatus:
    """Per-entry outcome of a batch call (``spire.api.types.Status``; ``code`` is a google.rpc.Code)."""

    code: int
    message: str = ""
    entry_id: str = ""

    @property
    def ok(self) -> bool:
        return self.code == OK

    def __str__(self) -> str:
        name = _CODE_NAMES[self.code] if 0 <= self.code < len(_CODE_NAMES) else f"code {self.code}"
        return f"{name}: {self.message}" if self.message else name


class EntryServer(Protocol):
    """The parts of SPIRE's Server API that registration needs: ``spire.api.server.entry.v1.Entry``, and
    ``spire.api.server.agent.v1.Agent.GetAgent`` to tell whether an entry's parent is an attested agent.

    Batch calls return one status per input, in input order (as SPIRE's batch RPCs do).
    """

    def list_entries(self) -> list[Entry]:
        """Every entry on the server (all pages)."""
        ...

    def batch_create_entries(self, entries: Sequence[Entry]) -> list[EntryStatus]: ...

    def batch_update_entries(self, entries: Sequence[Entry], fields: Collection[str]) -> list[EntryStatus]:
        """Update only ``fields`` (names from :data:`MANAGED_FIELDS`) of the entries named by ``id``."""
        ...

    def batch_delete_entries(self, ids: Sequence[str]) -> list[EntryStatus]: ...

    def known_agents(self, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` are agents the server has attested (and not deleted)."""
        ...


def server_id(trust_domain: TrustDomain) -> str:
    """``spiffe://<td>/spire/server``: the parent of node (alias) entries (SPIRE "Mapping workloads to nodes")."""
    return f"spiffe://{trust_domain.name}/spire/server"


def new_entry_id(prefix: str) -> str:
    """A fresh entry ID carrying the ownership prefix, as spire-controller-manager makes them."""
    return f"{prefix}{uuid.uuid4()}"


def entry_for_workload(workload: Workload) -> Entry:
    """The entry a workload should have (``id`` is assigned at create time). TTL 0 is the server's default."""
    return Entry(
        spiffe_id=str(workload.spiffe_id),
        parent_id=str(workload.parent_id),
        selectors=workload.selectors,
        x509_svid_ttl=workload.x509_svid_ttl,
        jwt_svid_ttl=workload.jwt_svid_ttl,
        dns_names=workload.dns_names,
        hint=workload.hint or "",
        admin=workload.admin,
        downstream=workload.downstream,
        federates_with=workload.federates_with,
        jwt_svid_include_jti=workload.jwt_svid_include_jti,
    )


def entry_for_alias(alias: NodeAlias, trust_domain: TrustDomain) -> Entry:
    """The node entry of an alias: parented to the server (or one agent), server-default TTLs."""
    parent = str(alias.parent_id) if alias.parent_id is not None else server_id(trust_domain)
    return Entry(spiffe_id=str(alias.spiffe_id), parent_id=parent, selectors=alias.selectors)
