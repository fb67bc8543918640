"""The client registry's routes over real TLS, with the real adapter over a faithful registry double and a real
audit trail: add, list, show, disable, enable, remove; every bad registration is ``invalid_client_metadata``
(RFC 7591 §3.2.2), audited ``refused``, changes nothing, and never quotes key material."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from broker.admin.adapters import RegistryClientAdmin
from broker.admin.app import add_admin_routes
from broker.admin.client import AdminClient
from broker.admin.errors import ClientExistsError, ClientNotFoundError
from broker.admin.wire import WireError, client_document, decode_client
from broker.audit.trail import AuditTrail
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.tokens.clients import RegisteredClient
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.conftest import ADMIN_ID
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit
from tests.unit.server.token_service_helpers import client_context, request
from tests.unit.tokens.client_registry_fake import LEGACY, T0, FakeClientRegistry, ec_jwk, inline_client

URI = "https://keys.example.com/billing/jwks.json"


@dataclass
class ClientsApi:
    url: str
    registry: FakeClientRegistry
    store: MemoryStore
    audit: RecordingAudit

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 100)]


@pytest.fixture
async def api(source: InMemorySvidSource) -> AsyncIterator[ClientsApi]:
    store, registry, audit = MemoryStore(latest_version()), FakeClientRegistry(), RecordingAudit()
    app = web.Application()
    add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                     store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=audit,
                     clients=RegistryClientAdmin(registry, AuditTrail(store.audit), clock=lambda: T0))  # fmt: skip
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield ClientsApi(f"https://127.0.0.1:{port}", registry, store, audit)
    finally:
        await runner.cleanup()
        ssl_context.detach()


@pytest.fixture
async def client(api: ClientsApi, admin_context: SourceSSLContext) -> AsyncIterator[AdminClient]:
    async with AdminClient(api.url, admin_context) as admin:
        yield admin


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


async def test_add_list_show_disable_enable_remove_audited_under_the_caller(
    api: ClientsApi, client: AdminClient
) -> None:
    registration = inline_client("billing", "k1", "k2")
    added = await client.add_client(registration)
    assert added.audited and added.result == registration.__class__(**{**_fields(registration), "created_at": T0,
                                                                        "updated_at": T0})  # fmt: skip
    assert added.result.jwks == registration.jwks
    uri = await client.add_client(RegisteredClient("a-uri-client", LEGACY, jwks_uri=URI, algorithms=("ES256", "PS256")))
    assert [c.client_id for c in await client.clients()] == ["a-uri-client", "billing"]
    assert (await client.client("a-uri-client")) == uri.result
    assert (await client.set_client_disabled("billing", True, reason="migrated")).result.disabled
    assert api.registry.clients["billing"].disabled
    assert not (await client.set_client_disabled("billing", False)).result.disabled
    removed = await client.remove_client("billing")
    assert removed.result.client_id == "billing" and "billing" not in api.registry.clients
    assert [(event, body["client_id"], body["actor"]) for event, body in await api.journal()] == [
        ("client.registered", "billing", str(ADMIN_ID)), ("client.registered", "a-uri-client", str(ADMIN_ID)),
        ("client.disabled", "billing", str(ADMIN_ID)), ("client.enabled", "billing", str(ADMIN_ID)),
        ("client.removed", "billing", str(ADMIN_ID)),
    ]  # fmt: skip
    assert [(r.method, r.path, r.outcome) for r in api.audit.records][:4] == [
        ("POST", "/admin/v1/clients", "requested"), ("POST", "/admin/v1/clients", "done"),
        ("POST", "/admin/v1/clients", "requested"), ("POST", "/admin/v1/clients", "done"),
    ]  # fmt: skip
    assert api.audit.records[0].detail == {"client_id": "billing", "spiffe_id": LEGACY, "kids": ["k1", "k2"],
                                           "inline_keys": 2, "algorithms": ["ES256"],
                                           "max_assertion_lifetime": 60}  # fmt: skip
    assert api.audit.records[2].detail["jwks_uri"] == URI
    assert {r.detail.get("reason") for r in api.audit.records if r.path.endswith("/disable")} == {"migrated"}


def _fields(client: RegisteredClient) -> dict[str, Any]:
    return {name: getattr(client, name) for name in RegisteredClient.__dataclass_fields__}


async def test_no_audit_record_holds_the_key_material(api: ClientsApi, client: AdminClient) -> None:
    registration = inline_client("billing", "k1")
    await client.add_client(registration)
    assert registration.jwks is not None
    x = registration.jwks["keys"][0]["x"]
    assert x not in json.dumps([r.detail for r in api.audit.records]) and x not in json.dumps(await api.journal())


def _jwks(**members: Any) -> dict[str, Any]:
    return {"keys": [{**ec_jwk(), **members}]}


PRIVATE_D = "c2VjcmV0LXByaXZhdGUta2V5LW1hdGVyaWFs"
BAD_REGISTRATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("both jwks and jwks_uri", {"jwks_uri": URI}, "exactly one of jwks and jwks_uri"),
    ("neither", {"jwks": None}, "exactly one of jwks and jwks_uri"),
    ("a private key", {"jwks": _jwks(d=PRIVATE_D)}, "public keys only"),
    ("a symmetric key", {"jwks": {"keys": [{"kty": "oct", "k": PRIVATE_D}]}}, "public keys only"),
    ("an empty key set", {"jwks": {"keys": []}}, "at least one key"),
    ("http jwks_uri", {"jwks": None, "jwks_uri": "http://keys.example.com/jwks"}, "https URL"),
    ("jwks_uri with credentials", {"jwks": None, "jwks_uri": "https://u:p@keys.example.com/"}, "no credentials"),
    ("not a SPIFFE ID", {"spiffe_id": "billing"}, "spiffe_id must be a SPIFFE ID"),
    ("no SPIFFE ID", {"spiffe_id": None}, "spiffe_id must be a SPIFFE ID"),
    ("alg none", {"algorithms": ["none"]}, "algorithms must be a non-empty subset"),
    ("HMAC", {"algorithms": ["HS256"]}, "algorithms must be a non-empty subset"),
    ("no algorithm", {"algorithms": []}, "algorithms must be a non-empty subset"),
    ("repeated algorithm", {"algorithms": ["ES256", "ES256"]}, "must not repeat"),
    ("lifetime 0", {"max_assertion_lifetime": 0}, "max_assertion_lifetime must be 1-300"),
    ("lifetime 301", {"max_assertion_lifetime": 301}, "max_assertion_lifetime must be 1-300"),
    ("lifetime a boolean", {"max_assertion_lifetime": True}, "whole number of seconds"),
    ("lifetime a string", {"max_assertion_lifetime": "60"}, "whole number of seconds"),
    ("jwks a list", {"jwks": [ec_jwk()]}, "JWK Set object"),
    ("algorithms a string", {"algorithms": "ES256"}, "list of JWS algorithm names"),
]


@pytest.mark.parametrize(("body", "says"), [b[1:] for b in BAD_REGISTRATIONS], ids=[b[0] for b in BAD_REGISTRATIONS])
async def test_a_bad_registration_is_invalid_client_metadata_audited_refused_and_changes_nothing(
    api: ClientsApi, admin_tls: ssl.SSLContext, body: dict[str, Any], says: str
) -> None:
    call = {"client_id": "billing", "spiffe_id": LEGACY, "jwks": _jwks(), **body}
    call = {name: value for name, value in call.items() if value is not None}
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/clients", json_body=call)
    assert (reply.status, reply.body["error"]) == (400, "invalid_client_metadata"), reply.body
    assert says in reply.body["error_description"]
    assert PRIVATE_D not in json.dumps(reply.body) and PRIVATE_D not in json.dumps(
        [r.detail for r in api.audit.records]
    )
    assert api.registry.clients == {} and await api.journal() == []
    assert api.audit.outcomes() == ["refused"]
    assert api.audit.records[0].detail == {"error": "invalid_client_metadata", "status": 400}


@pytest.mark.parametrize("client_id", ["", "two words", "x" * 256, "caf\u00e9", 7], ids=repr)
async def test_a_bad_client_id_is_invalid_request(api: ClientsApi, admin_tls: ssl.SSLContext, client_id: Any) -> None:
    body = {"client_id": client_id, "spiffe_id": LEGACY, "jwks": _jwks()}
    for path, sent in (("/clients", body), ("/clients/disable", {"client_id": client_id})):
        reply = await request(admin_tls, "POST", f"{api.url}/admin/v1{path}", json_body=sent)
        assert (reply.status, reply.body["error"]) == (400, "invalid_request")
        assert "client_id is required: 1 to 255 printable ASCII" in reply.body["error_description"]
    assert api.registry.clients == {} and api.audit.outcomes() == ["refused", "refused"]


async def test_a_taken_client_id_is_409_client_exists(api: ClientsApi, client: AdminClient) -> None:
    first = await client.add_client(inline_client("billing"))
    with pytest.raises(ClientExistsError, match="registered already"):
        await client.add_client(inline_client("billing", "k9"))
    assert api.registry.clients["billing"] == first.result and len(await api.journal()) == 1
    assert api.audit.outcomes()[2:] == ["requested", "refused"]


async def test_an_unknown_client_is_404_unknown_client_everywhere(api: ClientsApi, client: AdminClient) -> None:
    with pytest.raises(ClientNotFoundError, match="clients list"):
        await client.client("nobody")
    for call in (client.remove_client("nobody"), client.set_client_disabled("nobody", True),
                 client.set_client_disabled("nobody", False)):  # fmt: skip
        with pytest.raises(ClientNotFoundError):
            await call
    assert await api.journal() == []
    assert api.audit.records[-1].detail == {"client_id": "nobody", "error": "unknown_client", "status": 404}


async def test_the_add_body_may_carry_a_large_inline_jwks_and_the_others_keep_the_limit(
    api: ClientsApi, client: AdminClient, admin_tls: ssl.SSLContext
) -> None:
    many = RegisteredClient("many-keys", LEGACY, jwks={"keys": [ec_jwk(f"k{n}") for n in range(40)]})
    assert len(json.dumps(many.jwks)) > 4096
    assert (await client.add_client(many)).result.jwks == many.jwks
    big = {"client_id": "many-keys", "reason": "x" * 5000}
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/clients/disable", json_body=big)
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert "larger than 4096 bytes" in reply.body["error_description"]


async def test_a_client_id_with_reserved_characters_travels_in_the_query_and_body(client: AdminClient) -> None:
    odd = "team/a?b#c%2F"
    await client.add_client(inline_client(odd))
    assert (await client.client(odd)).client_id == odd
    assert (await client.set_client_disabled(odd, True)).result.client_id == odd


def test_answers_of_another_shape_are_refused() -> None:
    document = client_document(inline_client("billing"))
    assert decode_client(document).client_id == "billing"
    with pytest.raises(WireError, match="'disabled'"):
        decode_client({**document, "disabled": "no"})
    with pytest.raises(WireError, match="'max_assertion_lifetime'"):
        decode_client({**document, "max_assertion_lifetime": True})
