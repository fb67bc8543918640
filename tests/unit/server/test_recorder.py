"""The token endpoint's recorder: each token issued reaches the ledger and the audit trail, each refusal the
trail; when either cannot take a record, the request fails closed with 503 and the token is not returned."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.audit.journal import Stamped
from broker.audit.trail import AuditTrail
from broker.devtools.devca import DevCA
from broker.errors import InvalidScopeError, TemporarilyUnavailableError
from broker.identity.spiffeid import SpiffeId
from broker.server.recorder import BEHIND, Recorder
from broker.store.memory import MemoryStore
from broker.testing import API, WEB_ID, WEB_POLICY
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.grants.client_credentials import ClientCredentialsGrant
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.ledger import LedgerRow
from broker.tokens.policy import InMemoryPolicyStore, parse_policy

ISSUER = "https://broker.example.org:8443"


def form(**extra: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in {"grant_type": "client_credentials", "audience": API, **extra}.items()}


@pytest.fixture
def client() -> AuthenticatedClient:
    svid = DevCA.ephemeral("example.org").issue_x509_svid(SpiffeId.parse(WEB_ID), ttl=3600)
    return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore(2)


@pytest.fixture
async def recorder(store: MemoryStore) -> AsyncIterator[Recorder]:
    recorder = Recorder.for_store(store, batch_window=0.001, batch_max=4)
    recorder.start()
    yield recorder
    await recorder.close()


def endpoint(recorder: Recorder, key_store: InMemoryKeyStore) -> TokenEndpoint:
    endpoint = TokenEndpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store),
        policy_store=InMemoryPolicyStore(parse_policy(WEB_POLICY)),
        audit=recorder,
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    endpoint.register_grant(ClientCredentialsGrant())
    return endpoint


async def test_an_issued_token_is_in_the_ledger_and_the_journal_but_never_the_token(
    recorder: Recorder, store: MemoryStore, client: AuthenticatedClient
) -> None:
    keys = InMemoryKeyStore()
    response = await endpoint(recorder, keys).handle(form(scope="orders:read"), client)
    await recorder.flush()
    token = response.token
    assert token.kid == keys.active_key().kid

    radius = await store.ledger.blast_radius(token.kid, datetime.now(UTC))
    assert (radius.live_tokens, radius.subjects, radius.audiences) == (1, ((WEB_ID, 1),), ((API, 1),))
    assert radius.valid_until == datetime.fromtimestamp(token.claims["exp"], UTC)

    (record,) = await store.audit.read()
    assert record.event == "token.issued"
    assert json.loads(record.body) == {
        "jti": token.jti, "kid": token.kid, "sub": WEB_ID, "client_id": WEB_ID, "aud": [API],
        "scope": ["orders:read"], "binding": f"x5t#S256={client.x5t_s256()}", "auth_method": "tls_client_auth",
        "exp": token.claims["exp"],
    }  # fmt: skip
    assert token.token.encode() not in record.body
    assert token.token.split(".")[2].encode() not in record.body


async def test_a_refusal_is_recorded_with_its_code_and_client(
    recorder: Recorder, store: MemoryStore, client: AuthenticatedClient
) -> None:
    with pytest.raises(InvalidScopeError):
        await endpoint(recorder, InMemoryKeyStore()).handle(form(scope="admin:everything"), client)
    await recorder.flush()
    (record,) = await store.audit.read()
    assert record.event == "token.refused"
    assert json.loads(record.body) == {
        "error": "invalid_scope",
        "spiffe_id": WEB_ID,
        "grant_type": "client_credentials",
        "status": 400,
        "reason": None,
    }


async def test_when_the_writer_is_full_the_request_fails_closed_and_nothing_is_half_recorded(
    store: MemoryStore, client: AuthenticatedClient
) -> None:
    recorder = Recorder.for_store(store, batch_window=60.0, batch_max=1)  # not started: nothing drains
    for _ in range(16):
        recorder.refused(InvalidScopeError("no"), None)
    keys = InMemoryKeyStore()
    with pytest.raises(TemporarilyUnavailableError, match="retry shortly") as raised:
        await endpoint(recorder, keys).handle(form(), client)
    assert raised.value.status == 503 and raised.value.description == BEHIND
    assert recorder.tokens.pending == 16  # no token.issued, and the 503's own refusal found no room either
    assert recorder.refusals_not_recorded == 1
    assert await recorder.close() == 0
    assert [r.event for r in await store.audit.read()] == ["token.refused"] * 16
    assert (await store.ledger.blast_radius(keys.active_key().kid, datetime.now(UTC))).live_tokens == 0


async def test_issued_and_refused_are_journaled_in_the_order_they_happened_at_their_own_time(
    store: MemoryStore, client: AuthenticatedClient
) -> None:
    ticks = iter(range(1_800_000_000_000_000, 1_800_000_000_000_010))
    recorder = Recorder(store, trail=AuditTrail(store.audit), batch_window=60.0, clock=lambda: next(ticks))
    keys = InMemoryKeyStore()
    with pytest.raises(InvalidScopeError):
        await endpoint(recorder, keys).handle(form(scope="admin:everything"), client)
    await endpoint(recorder, keys).handle(form(), client)
    await recorder.close()
    records = await store.audit.read()
    assert [r.event for r in records] == ["token.refused", "token.issued"]
    assert [r.at for r in records] == [datetime(2027, 1, 15, 8, 0, tzinfo=UTC) + timedelta(microseconds=i)
                                       for i in (0, 1)]  # fmt: skip


async def test_the_ledger_and_the_journal_get_each_batch_in_one_write(
    store: MemoryStore, client: AuthenticatedClient
) -> None:
    batches: list[tuple[int, int]] = []
    write = store.record_issuance

    async def record_issuance(tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
        batches.append((len(tokens), len(events)))
        await write(tokens, events)

    store.record_issuance = record_issuance  # type: ignore[method-assign]
    recorder = Recorder.for_store(store, batch_window=60.0)
    keys = InMemoryKeyStore()
    for _ in range(3):
        await endpoint(recorder, keys).handle(form(), client)
    await recorder.close()
    assert batches == [(3, 3)]
    assert (await store.ledger.blast_radius(keys.active_key().kid, datetime.now(UTC))).live_tokens == 3
