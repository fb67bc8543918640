"""The SPIRE Server entry API (``spire.api.server.entry.v1.Entry``) over the server's admin Unix socket, plus
the read-only part of its agent API (``spire.api.server.agent.v1.Agent``: GetAgent, ListAgents).

The admin socket needs no TLS: SPIRE treats callers on it as local, and the socket's file permissions are
the access control (SPIRE Server configuration reference, ``socket_path``). Calls are synchronous grpcio
calls with a deadline; run them in a thread from async code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

import grpc  # type: ignore[import-untyped]

from broker._proto.spire.api.server.agent.v1 import agent_pb2 as agent_api
from broker._proto.spire.api.server.agent.v1 import agent_pb2_grpc as agent_grpc
from broker._proto.spire.api.server.entry.v1 import entry_pb2 as api
from broker._proto.spire.api.server.entry.v1 import entry_pb2_grpc as api_grpc
from broker._proto.spire.api.types import agent_pb2 as agent_types
from broker._proto.spire.api.types import entry_pb2 as types
from broker._proto.spire.api.types import selector_pb2, spiffeid_pb2
from broker.identity.spiffeid import SpiffeId
from broker.registration.entries import MANAGED_FIELDS, Entry, EntryStatus
from broker.registration.errors import RegistrationError
from broker.registration.model import Selector

__all__ = ["EntryClient", "entry_from_proto", "entry_to_proto"]

_PAGE_SIZE = 500
_MAX_PAGES = 10_000
_T = TypeVar("_T")
_NO_AGENT = agent_types.Agent()
_UNAVAILABLE_TODO = (
    "; check that spire-server is running and that this is its admin socket (server.socket_path), "
    "readable and writable by this user"
)


def _socket_path(value: str) -> str:
    """The admin socket as a path; ``unix:///path`` and ``unix:/path`` (gRPC's target forms) are accepted."""
    for scheme in ("unix://", "unix:"):
        if value.startswith(scheme):
            return value[len(scheme) :]
    return value


def _spiffe_id(value: str) -> spiffeid_pb2.SPIFFEID:
    parsed = SpiffeId.parse(value)
    return spiffeid_pb2.SPIFFEID(trust_domain=parsed.trust_domain.name, path=parsed.path)


def _id_string(value: spiffeid_pb2.SPIFFEID) -> str:
    return f"spiffe://{value.trust_domain}{value.path}"


def entry_to_proto(entry: Entry) -> types.Entry:
    """``Entry`` -> ``spire.api.types.Entry`` (``id`` only when set)."""
    message = types.Entry(
        id=entry.id,
        spiffe_id=_spiffe_id(entry.spiffe_id),
        parent_id=_spiffe_id(entry.parent_id),
        selectors=[selector_pb2.Selector(type=s.type, value=s.value) for s in entry.selectors],
        x509_svid_ttl=entry.x509_svid_ttl,
        jwt_svid_ttl=entry.jwt_svid_ttl,
        dns_names=list(entry.dns_names),
        hint=entry.hint,
        admin=entry.admin,
        downstream=entry.downstream,
        store_svid=entry.store_svid,
        federates_with=list(entry.federates_with),
        expires_at=entry.expires_at,
    )
    message.additional_attributes.jwt_svid_include_jti = entry.jwt_svid_include_jti
    return message


def entry_from_proto(message: types.Entry) -> Entry:
    """``spire.api.types.Entry`` -> ``Entry``."""
    return Entry(
        id=message.id,
        spiffe_id=_id_string(message.spiffe_id),
        parent_id=_id_string(message.parent_id),
        selectors=tuple(Selector(s.type, s.value) for s in message.selectors),
        x509_svid_ttl=message.x509_svid_ttl,
        jwt_svid_ttl=message.jwt_svid_ttl,
        dns_names=tuple(message.dns_names),
        hint=message.hint,
        admin=message.admin,
        downstream=message.downstream,
        store_svid=message.store_svid,
        federates_with=tuple(message.federates_with),
        expires_at=message.expires_at,
        jwt_svid_include_jti=message.additional_attributes.jwt_svid_include_jti,
        revision_number=message.revision_number,
    )


def _mask(names: Collection[str]) -> types.EntryMask:
    unknown = set(names) - set(MANAGED_FIELDS)
    if unknown:
        raise ValueError(f"not updatable fields: {sorted(unknown)}")
    mask = types.EntryMask()
    for name in names:
        setattr(mask, "additional_attributes" if name == "jwt_svid_include_jti" else name, True)
    return mask


class EntryClient:
    """:class:`~broker.registration.entries.EntryServer` on a real SPIRE Server's admin socket."""

    def __init__(self, socket_path: str, *, timeout: float = 10.0) -> None:
        socket_path = _socket_path(socket_path)
        self._socket_path = socket_path
        self._timeout = timeout
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        # The generated stub is untyped (grpcio ships no type information); responses are annotated below.
        self._stub = api_grpc.EntryStub(self._channel)  # type: ignore[no-untyped-call]
        self._agents = agent_grpc.AgentStub(self._channel)  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"EntryClient({self._socket_path!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, name: str, call: Callable[[], _T], *, absent: _T | None = None) -> _T:
        """Run one RPC; NOT_FOUND gives ``absent`` when one is given, every other failure an error."""
        try:
            return call()
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            if absent is not None and code == "NOT_FOUND":
                return absent
            details = exc.details() if hasattr(exc, "details") else ""
            todo = _UNAVAILABLE_TODO if code == "UNAVAILABLE" else ""
            raise RegistrationError(
                f"SPIRE Server {name} at {self._socket_path} failed: {code}: {details}{todo}"
            ) from None

    def list_entries(self) -> list[Entry]:
        entries: list[Entry] = []
        token = ""
        for _ in range(_MAX_PAGES):
            response = self._list_page(token)
            entries.extend(entry_from_proto(m) for m in response.entries)
            if not response.next_page_token or response.next_page_token == token:
                return entries
            token = response.next_page_token
        raise RegistrationError(f"SPIRE Server ListEntries at {self._socket_path}: too many pages")

    def _list_page(self, token: str) -> api.ListEntriesResponse:
        request = api.ListEntriesRequest(page_size=_PAGE_SIZE, page_token=token)
        response: api.ListEntriesResponse = self._call(
            "ListEntries", lambda: self._stub.ListEntries(request, timeout=self._timeout)
        )
        return response

    def batch_create_entries(self, entries: Sequence[Entry]) -> list[EntryStatus]:
        request = api.BatchCreateEntryRequest(entries=[entry_to_proto(e) for e in entries])
        response: api.BatchCreateEntryResponse = self._call(
            "BatchCreateEntry", lambda: self._stub.BatchCreateEntry(request, timeout=self._timeout)
        )
        out = [EntryStatus(r.status.code, r.status.message, r.entry.id) for r in response.results]
        return self._checked_count(out, len(entries))

    def batch_update_entries(self, entries: Sequence[Entry], fields: Collection[str]) -> list[EntryStatus]:
        request = api.BatchUpdateEntryRequest(entries=[entry_to_proto(e) for e in entries], input_mask=_mask(fields))
        response: api.BatchUpdateEntryResponse = self._call(
            "BatchUpdateEntry", lambda: self._stub.BatchUpdateEntry(request, timeout=self._timeout)
        )
        out = [EntryStatus(r.status.code, r.status.message, r.entry.id) for r in response.results]
        return self._checked_count(out, len(entries))

    def batch_delete_entries(self, ids: Sequence[str]) -> list[EntryStatus]:
        request = api.BatchDeleteEntryRequest(ids=list(ids))
        response: api.BatchDeleteEntryResponse = self._call(
            "BatchDeleteEntry", lambda: self._stub.BatchDeleteEntry(request, timeout=self._timeout)
        )
        out = [EntryStatus(r.status.code, r.status.message, r.id) for r in response.results]
        return self._checked_count(out, len(ids))

    def known_agents(self, ids: Collection[str]) -> set[str]:
        """Agent.GetAgent per ID (output mask empty: only the ID comes back); NOT_FOUND means unknown."""
        known: set[str] = set()
        for agent_id in ids:
            request = agent_api.GetAgentRequest(id=_spiffe_id(agent_id), output_mask=agent_types.AgentMask())
            found: agent_types.Agent = self._call(
                "GetAgent", partial(self._agents.GetAgent, request, timeout=self._timeout), absent=_NO_AGENT
            )
            if found is not _NO_AGENT:
                known.add(agent_id)
        return known

    def list_agents(self) -> list[tuple[str, tuple[Selector, ...]]]:
        """Every attested agent's SPIFFE ID and node selectors (Agent.ListAgents, all pages)."""
        agents: list[tuple[str, tuple[Selector, ...]]] = []
        token = ""
        mask = agent_types.AgentMask(selectors=True)
        for _ in range(_MAX_PAGES):
            request = agent_api.ListAgentsRequest(output_mask=mask, page_size=_PAGE_SIZE, page_token=token)
            response: agent_api.ListAgentsResponse = self._call(
                "ListAgents", partial(self._agents.ListAgents, request, timeout=self._timeout)
            )
            agents += [
                (_id_string(a.id), tuple(Selector(s.type, s.value) for s in a.selectors)) for a in response.agents
            ]
            if not response.next_page_token or response.next_page_token == token:
                return agents
            token = response.next_page_token
        raise RegistrationError(f"SPIRE Server ListAgents at {self._socket_path}: too many pages")

    def _checked_count(self, statuses: list[EntryStatus], expected: int) -> list[EntryStatus]:
        if len(statuses) != expected:
            raise RegistrationError(
                f"SPIRE Server at {self._socket_path} returned {len(statuses)} results for {expected} entries"
            )
        return statuses
