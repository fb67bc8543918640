"""The parsed form of ``workloads.yaml``: workloads, their selectors and their broker policy.

A workload becomes one SPIRE registration entry (SPIRE "Registering workloads"): a SPIFFE ID, the parent
(agent or node) ID it is delegated to, and the workload selectors an agent must observe to hand it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.identity.spiffeid import SpiffeId, TrustDomain

if TYPE_CHECKING:
    from broker.registration.exceptions import DeclaredException

__all__ = ["DEFAULT_ENTRY_ID_PREFIX", "NodeAlias", "Policy", "Selector", "Workload", "WorkloadsFile"]

# A selector type is a plugin name (unix, k8s, docker, ...); the value is everything after the first colon.
_SELECTOR_TYPE = re.compile(r"[A-Za-z0-9_.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The entry ID prefix that marks the broker's entries. The '.' keeps them clear of spire-controller-manager's
# ``entryIDPrefixCleanup: ""``, which deletes every entry whose ID has no '.' (IDs SPIRE generated itself).
DEFAULT_ENTRY_ID_PREFIX = "spiffe-broker."


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """A workload selector ``type:value``, e.g. ``unix:uid:1000`` or ``k8s:ns:shop``."""

    type: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Split ``type:value`` at the first colon; raise ValueError naming what is wrong."""
        kind, sep, value = text.partition(":")
        if not sep:
            raise ValueError("must be 'type:value'")
        if not _SELECTOR_TYPE.fullmatch(kind):
            raise ValueError("selector type must be letters, digits, '.', '_' or '-'")
        if not value or value != value.strip() or _CONTROL.search(value):
            raise ValueError("selector value must be non-empty, without surrounding blanks or control characters")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the broker lets this workload ask for (the broker policy file's rule for its SPIFFE ID)."""

    audiences: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    max_token_lifetime: int = 300


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload: the registration entry it maps to, plus its optional broker policy."""

    name: str
    spiffe_id: SpiffeId
    parent_id: SpiffeId
    selectors: tuple[Selector, ...]
    x509_svid_ttl: int  # 0: the server's default_x509_svid_ttl
    jwt_svid_ttl: int  # 0: the server's default_jwt_svid_ttl
    dns_names: tuple[str, ...] = ()
    jwt_svid_include_jti: bool = False
    policy: Policy | None = None
    line: int = field(default=0, compare=False)
    hint: str | None = None  # None: the file leaves the entry's hint alone
    admin: bool = False
    downstream: bool = False
    federates_with: tuple[str, ...] = ()  # trust domain names

    def __post_init__(self) -> None:
        object.__setattr__(self, "selectors", tuple(sorted(set(self.selectors))))

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...]]:
        """(spiffe_id, parent_id, sorted selectors): what SPIRE calls "similar" entries."""
        return str(self.spiffe_id), str(self.parent_id), tuple(str(s) for s in self.selectors)


@dataclass(frozen=True, slots=True)
class NodeAlias:
    """A node alias (SPIRE "Mapping workloads to nodes"): one SPIFFE ID for every agent whose node selectors
    (``k8s_psat:cluster:demo``, ``aws_iid:tag:role:web`` ...) include all of ``selectors``. Workloads name it
    as their ``parent_id``; its entry is parented to ``spiffe://<td>/spire/server``."""

    name: str
    spiffe_id: SpiffeId
    selectors: tuple[Selector, ...]
    line: int = field(default=0, compare=False)
    # None: the server (match by node selectors). An agent ID: alias that one agent, the shape
    # `spire-server token generate -spiffeID` creates (selector spiffe_id:<agent ID>), for agents without
    # node selectors such as join_token ones.
    parent_id: SpiffeId | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "selectors", tuple(sorted(set(self.selectors))))


@dataclass(frozen=True, slots=True)
class WorkloadsFile:
    """A whole ``workloads.yaml``."""

    path: str
    trust_domain: TrustDomain
    workloads: tuple[Workload, ...]
    node_aliases: tuple[NodeAlias, ...] = ()
    entry_id_prefix: str = DEFAULT_ENTRY_ID_PREFIX
    k8s_class_name: str | None = None  # None: the export's default
    api_key_exceptions: tuple[DeclaredException, ...] = ()  # governed API-key exceptions (issue 12)
