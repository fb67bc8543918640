"""EntryClient: proto mapping, field masks, paging and errors, against an in-process gRPC Entry service."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from broker._proto.spire.api.server.agent.v1 import agent_pb2 as agent_api
from broker._proto.spire.api.server.agent.v1 import agent_pb2_grpc as agent_grpc
from broker._proto.spire.api.server.entry.v1 import entry_pb2 as api
from broker._proto.spire.api.server.entry.v1 import entry_pb2_grpc as api_grpc
from broker._proto.spire.api.types import agent_pb2 as agent_types
from broker._proto.spire.api.types import entry_pb2 as types
from broker._proto.spire.api.types import spiffeid_pb2, status_pb2
from broker.registration import Entry, EntryClient, RegistrationError, Selector
from broker.registration.client import _mask, entry_from_proto, entry_to_proto

ENTRY = Entry(
    spiffe_id="spiffe://example.org/ns/shop/sa/web",
    parent_id="spiffe://example.org/agent/test",
    selectors=(Selector("k8s", "sa:web"), Selector("k8s", "ns:shop")),
    x509_svid_ttl=3600,
    jwt_svid_ttl=300,
    dns_names=("web.shop.svc",),
    hint="web",
    admin=True,
    downstream=True,
    federates_with=("partner.example", "other.example"),
    jwt_svid_include_jti=True,
    id="spiffe-broker.0d7c5f4e",
)


def test_entry_round_trips_through_the_spire_proto() -> None:
    message = entry_to_proto(ENTRY)
    assert (message.spiffe_id.trust_domain, message.spiffe_id.path) == ("example.org", "/ns/shop/sa/web")
    assert message.HasField("additional_attributes")
    assert entry_from_proto(message) == ENTRY


def test_update_mask_names_additional_attributes_for_include_jti() -> None:
    mask = _mask({"jwt_svid_include_jti", "x509_svid_ttl"})
    assert (mask.additional_attributes, mask.x509_svid_ttl, mask.jwt_svid_ttl, mask.spiffe_id) == (
        True,
        True,
        False,
        False,
    )


def test_update_mask_refuses_identity_fields() -> None:
    with pytest.raises(ValueError, match="spiffe_id"):
        _mask({"spiffe_id"})


class _Servicer(api_grpc.EntryServicer):
    """Three entries over two pages; batch calls answer per-entry statuses."""

    def __init__(self) -> None:
        self.update_masks: list[types.EntryMask] = []

    def ListEntries(self, request: api.ListEntriesRequest, context: Any) -> api.ListEntriesResponse:
        first = [entry_to_proto(ENTRY), entry_to_proto(Entry("spiffe://example.org/b", ENTRY.parent_id, ()))]
        if request.page_token == "":
            return api.ListEntriesResponse(entries=first, next_page_token="p2")
        last = entry_to_proto(Entry("spiffe://example.org/c", ENTRY.parent_id, ()))
        return api.ListEntriesResponse(entries=[last])

    def BatchCreateEntry(self, request: api.BatchCreateEntryRequest, context: Any) -> api.BatchCreateEntryResponse:
        results = [
            api.BatchCreateEntryResponse.Result(
                status=status_pb2.Status(code=6, message="similar entry already exists"), entry=e
            )
            for e in request.entries
        ]
        return api.BatchCreateEntryResponse(results=results)

    def BatchUpdateEntry(self, request: api.BatchUpdateEntryRequest, context: Any) -> api.BatchUpdateEntryResponse:
        self.update_masks.append(request.input_mask)
        return api.BatchUpdateEntryResponse(results=[])

    def BatchDeleteEntry(self, request: api.BatchDeleteEntryRequest, context: Any) -> api.BatchDeleteEntryResponse:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not local")
        raise AssertionError("context.abort raises")


KNOWN_AGENT = "spiffe://example.org/spire/agent/join_token/known"


class _Agents(agent_grpc.AgentServicer):
    """One known agent; GetAgent of any other is NOT_FOUND, of ``.../broken`` UNAVAILABLE."""

    def __init__(self) -> None:
        self.masks: list[agent_types.AgentMask] = []

    def GetAgent(self, request: agent_api.GetAgentRequest, context: Any) -> agent_types.Agent:
        self.masks.append(request.output_mask)
        agent_id = f"spiffe://{request.id.trust_domain}{request.id.path}"
        if agent_id.endswith("/broken"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "datastore down")
        if agent_id != KNOWN_AGENT:
            context.abort(grpc.StatusCode.NOT_FOUND, "agent not found")
        return agent_types.Agent(id=request.id)

    def ListAgents(self, request: agent_api.ListAgentsRequest, context: Any) -> agent_api.ListAgentsResponse:
        agent = agent_types.Agent(id=spiffeid_pb2.SPIFFEID(trust_domain="example.org", path="/spire/agent/x/1"))
        if request.page_token == "":
            agent.selectors.add(type="x", value="cluster:demo")
            return agent_api.ListAgentsResponse(agents=[agent], next_page_token="p2")
        return agent_api.ListAgentsResponse(agents=[])


@pytest.fixture
def served() -> Iterator[tuple[EntryClient, _Servicer]]:
    directory = tempfile.mkdtemp(dir="/tmp")
    socket_path = f"{directory}/api.sock"
    servicer = _Servicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    # The generated registration functions are untyped (grpcio ships no type information).
    api_grpc.add_EntryServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    agent_grpc.add_AgentServicer_to_server(_Agents(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    client = EntryClient(socket_path, timeout=5)
    try:
        yield client, servicer
    finally:
        client.close()
        server.stop(None).wait()
        Path(socket_path).unlink(missing_ok=True)
        Path(directory).rmdir()


def test_list_entries_follows_page_tokens(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    assert [e.spiffe_id for e in client.list_entries()] == [
        ENTRY.spiffe_id,
        "spiffe://example.org/b",
        "spiffe://example.org/c",
    ]


def test_batch_create_returns_per_entry_status(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    (status,) = client.batch_create_entries([ENTRY])
    assert (status.ok, status.code, str(status)) == (False, 6, "ALREADY_EXISTS: similar entry already exists")


def test_batch_update_with_missing_results_is_an_error(served: tuple[EntryClient, _Servicer]) -> None:
    client, servicer = served
    with pytest.raises(RegistrationError, match="returned 0 results for 1 entries"):
        client.batch_update_entries([ENTRY], {"x509_svid_ttl"})
    assert servicer.update_masks[0].x509_svid_ttl and not servicer.update_masks[0].hint


def test_rpc_failure_is_a_registration_error_naming_the_call(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    with pytest.raises(RegistrationError, match=r"BatchDeleteEntry at .*: PERMISSION_DENIED: not local"):
        client.batch_delete_entries(["x"])


def test_unreachable_socket_is_a_registration_error() -> None:
    with (
        EntryClient("/tmp/does-not-exist-spiffe-broker.sock", timeout=1) as client,
        pytest.raises(RegistrationError, match=r"ListEntries at /tmp/does-not-exist-spiffe-broker\.sock"),
    ):
        client.list_entries()


def test_known_agents_asks_get_agent_and_treats_not_found_as_unknown(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    other = "spiffe://example.org/spire/agent/join_token/other"
    assert client.known_agents([KNOWN_AGENT, other]) == {KNOWN_AGENT}


def test_known_agents_fails_closed_on_other_errors(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    with pytest.raises(RegistrationError, match=r"GetAgent at .*: UNAVAILABLE: datastore down"):
        client.known_agents(["spiffe://example.org/spire/agent/x/broken"])


def test_list_agents_follows_page_tokens_and_reads_node_selectors(served: tuple[EntryClient, _Servicer]) -> None:
    client, _ = served
    assert client.list_agents() == [("spiffe://example.org/spire/agent/x/1", (Selector("x", "cluster:demo"),))]


@pytest.mark.parametrize("target", ["unix:///tmp/spire/api.sock", "unix:/tmp/spire/api.sock", "/tmp/spire/api.sock"])
def test_socket_given_as_a_grpc_unix_target_is_the_same_path(target: str) -> None:
    with EntryClient(target) as client:
        assert repr(client) == "EntryClient('/tmp/spire/api.sock')"


def test_unreachable_server_error_says_what_to_check() -> None:
    with (
        EntryClient("unix:///tmp/does-not-exist-spiffe-broker.sock", timeout=1) as client,
        pytest.raises(RegistrationError, match=r"UNAVAILABLE: .*check that spire-server is running") as info,
    ):
        client.list_entries()
    assert "unix:unix:" not in info.value.description
