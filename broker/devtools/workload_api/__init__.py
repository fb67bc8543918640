"""The embedded dev SPIFFE Workload API (``spiffe-broker workload-api``, used by ``spiffe-broker dev`` and tests).

A grpclib server on a Unix socket speaking the real ``SpiffeWorkloadAPI`` service, attesting callers by their
Unix peer credentials against registration entries, and issuing from a :class:`~broker.devtools.devca.DevCA`::

    server = WorkloadApiServer(ca=ca, entries=FileEntryStore(path), socket_path=Path("/tmp/wl/agent.sock"))
    await server.start()          # listening
    ...
    await server.stop()

Synchronous callers (py-spiffe clients in tests) run it in a :class:`WorkloadApiThread`.
"""

from broker.devtools.workload_api.attestation import AttestationError, PeerCredentials
from broker.devtools.workload_api.entries import (
    EntryStore,
    FileEntryStore,
    InMemoryEntryStore,
    RegistrationEntry,
    RegistrationEntryError,
    Selector,
)
from broker.devtools.workload_api.server import WorkloadApiServer, WorkloadApiServerError, serve_until_signalled
from broker.devtools.workload_api.statedir import StateDirError, open_dev_state, prepare_state_dir
from broker.devtools.workload_api.thread import WorkloadApiThread

__all__ = [
    "AttestationError",
    "EntryStore",
    "FileEntryStore",
    "InMemoryEntryStore",
    "PeerCredentials",
    "RegistrationEntry",
    "RegistrationEntryError",
    "Selector",
    "StateDirError",
    "WorkloadApiServer",
    "WorkloadApiServerError",
    "WorkloadApiThread",
    "open_dev_state",
    "prepare_state_dir",
    "serve_until_signalled",
]
