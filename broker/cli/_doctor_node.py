"""What ``spiffe-broker doctor`` is given, and what each check learns for the checks after it.

Each check reads what earlier checks left on the :class:`Node` through a ``need_*`` accessor; the runner never
calls a check whose predecessor failed, so an accessor that finds nothing is a bug, not a user's problem.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import JwtSvid, X509Svid
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.oauth.metadata import AuthorizationServerMetadata
from broker.sidecar.token_result import TokenResult

__all__ = ["ClockSample", "Inputs", "Node", "Timed"]


@dataclass(frozen=True, slots=True)
class Inputs:
    """The command's options (the Workload API address before the ``SPIFFE_ENDPOINT_SOCKET`` fallback)."""

    workload_api: str | None
    issuer: str
    server_id: str | None
    audience: str | None
    scope: str | None
    max_skew: float
    timeout: float


@dataclass(frozen=True, slots=True)
class Timed:
    """When this node sent a request and when the answer came back (``time.time()``), for clock comparisons."""

    sent: float
    received: float

    @property
    def midpoint(self) -> float:
        return (self.sent + self.received) / 2

    @classmethod
    def since(cls, sent: float) -> Timed:
        return cls(sent, time.time())


@dataclass(frozen=True, slots=True)
class ClockSample:
    """Another clock's reading (``their`` seconds since the epoch) taken during ``when``: whose, and by what."""

    clock: str
    evidence: str
    their: float
    when: Timed

    @property
    def offset(self) -> float:
        """Their clock minus this node's, in seconds: positive when theirs runs ahead. A whole-second reading is
        taken as its middle (``iat`` and ``Date`` truncate), this node's time as the request's midpoint."""
        return self.their + 0.5 - self.when.midpoint


@dataclass
class Node:
    """The doctor's state: the inputs, the resources to close, and what the checks found so far."""

    inputs: Inputs
    stack: contextlib.AsyncExitStack
    address: str | None = None
    source: WorkloadApiSvidSource | None = None
    svid: X509Svid | None = None
    clock_svid: tuple[JwtSvid, Timed] | None = None
    server_id: SpiffeId | None = None
    metadata: AuthorizationServerMetadata | None = None
    token: tuple[TokenResult, Timed] | None = field(default=None, repr=False)
    clocks: list[ClockSample] = field(default_factory=list)

    def need_source(self) -> WorkloadApiSvidSource:
        assert self.source is not None, "the workload-api check runs first"
        return self.source

    def need_svid(self) -> X509Svid:
        assert self.svid is not None, "the trust-bundle check runs first"
        return self.svid

    def need_server(self) -> tuple[SpiffeId, AuthorizationServerMetadata]:
        assert self.server_id is not None and self.metadata is not None, "the token-service check runs first"
        return self.server_id, self.metadata
