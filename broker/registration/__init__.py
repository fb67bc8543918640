"""Registration as code: ``workloads.yaml`` -> SPIRE registration entries, broker policy, ClusterSPIFFEIDs.

Typical use (what the CLI does)::

    workloads = load_workloads("workloads.yaml")
    with EntryClient("/tmp/spire-server/private/api.sock") as server:
        changes = plan(workloads, server)
        print(render_plan(changes))
        apply(changes, server)
"""

from broker.registration.client import EntryClient
from broker.registration.entries import DEFAULT_ENTRY_ID_PREFIX, LEGACY_HINT, Entry, EntryServer, EntryStatus
from broker.registration.errors import RegistrationError, WorkloadsFileError
from broker.registration.export import export_cluster_spiffe_ids, export_policy
from broker.registration.loader import load_workloads, parse_workloads
from broker.registration.memory import InMemoryEntryServer
from broker.registration.model import NodeAlias, Policy, Selector, Workload, WorkloadsFile
from broker.registration.plan import ApplyResult, Plan, apply, plan, render_plan

__all__ = [
    "DEFAULT_ENTRY_ID_PREFIX",
    "LEGACY_HINT",
    "ApplyResult",
    "Entry",
    "EntryClient",
    "EntryServer",
    "EntryStatus",
    "InMemoryEntryServer",
    "NodeAlias",
    "Plan",
    "Policy",
    "RegistrationError",
    "Selector",
    "Workload",
    "WorkloadsFile",
    "WorkloadsFileError",
    "apply",
    "export_cluster_spiffe_ids",
    "export_policy",
    "load_workloads",
    "parse_workloads",
    "plan",
    "render_plan",
]
