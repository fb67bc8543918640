"""Tests for broker.tokens.revoke: RFC 7009 §2.1-2.2.1 at the endpoint, with fake token checks and log."""

from __future__ import annotations

import pytest

from broker.audit.events import AuditEvent, TokenRevocationRecorded
from broker.errors import InvalidClientError, InvalidGrantError, InvalidRequestError, OAuthError
from broker.identity.spiffeid import SpiffeId
from broker.tokens.revoke import RevocationEndpoint
from tests.unit.tokens.presented_helpers import (
    ADMIN,
    RS,
    WEB,
    KnownTokens,
    RecordingRevocations,
    checked,
    client,
    client_auth,
)


class Journal:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record_now(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def log() -> RecordingRevocations:
    return RecordingRevocations()


def endpoint(log: RecordingRevocations, journal: Journal, tokens: KnownTokens | None = None) -> RevocationEndpoint:
    return RevocationEndpoint(
        client_auth=client_auth(),
        tokens=tokens or KnownTokens(web=checked(), rs=checked(jti="j2", subject=RS)),
        revocations=log,
        admins=frozenset({SpiffeId.parse(ADMIN)}),
        record_now=journal.record_now,
    )


async def test_the_holder_revokes_its_token_once_and_it_is_audited(log: RecordingRevocations, journal: Journal) -> None:
    revocation = endpoint(log, journal)
    await revocation.handle({"token": ["web"], "token_type_hint": ["access_token"]}, client(WEB))
    await revocation.handle({"token": ["web"]}, client(WEB))  # already revoked: 200, no second entry
    assert log.revoked == ["j1"]
    assert journal.events == [TokenRevocationRecorded(jti="j1", sub=WEB, exp=1800000060, by="client", actor=WEB)]


async def test_an_admin_revokes_any_token_and_is_named_in_the_audit(
    log: RecordingRevocations, journal: Journal
) -> None:
    await endpoint(log, journal).handle({"token": ["rs"]}, client(ADMIN))
    assert log.revoked == ["j2"]
    assert journal.events == [TokenRevocationRecorded(jti="j2", sub=RS, exp=1800000060, by="admin", actor=ADMIN)]


async def test_another_clients_valid_token_is_refused_invalid_grant_and_nothing_changes(
    log: RecordingRevocations, journal: Journal
) -> None:
    with pytest.raises(InvalidGrantError) as caught:
        await endpoint(log, journal).handle({"token": ["rs"]}, client(WEB))
    assert (caught.value.error, caught.value.status) == ("invalid_grant", 400)
    assert log.revoked == [] and journal.events == []


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"token": ["not-one-of-ours"]}, id="unknown-forged-expired-or-other-issuer"),
        pytest.param({"token": ["not-one-of-ours"], "token_type_hint": ["refresh_token"]}, id="refresh-hint"),
        pytest.param({"token": ["x"], "token_type_hint": ["made_up_type"]}, id="unknown-hint-ignored"),
    ],
)
async def test_a_token_that_does_not_verify_is_answered_200_and_changes_nothing(
    log: RecordingRevocations, journal: Journal, form: dict[str, list[str]]
) -> None:
    await endpoint(log, journal).handle(form, client(WEB))
    assert log.revoked == [] and journal.events == []


async def test_the_hint_does_not_hide_a_token_of_another_type(log: RecordingRevocations, journal: Journal) -> None:
    await endpoint(log, journal).handle({"token": ["web"], "token_type_hint": ["refresh_token"]}, client(WEB))
    assert log.revoked == ["j1"]  # RFC 7009 §2.1: the search extends to every type the server supports


@pytest.mark.parametrize(
    ("form", "error"),
    [
        pytest.param({}, InvalidRequestError, id="no-token"),
        pytest.param({"token": [""]}, InvalidRequestError, id="empty-token"),
        pytest.param({"token": ["web", "rs"]}, InvalidRequestError, id="repeated-token"),
        pytest.param({"token": ["web"], "token_type_hint": ["a", "b"]}, InvalidRequestError, id="repeated-hint"),
        pytest.param({"token": ["web"], "client_id": [RS]}, InvalidClientError, id="client-id-not-the-caller"),
    ],
)
async def test_a_malformed_request_is_refused_before_the_token_is_looked_at(
    log: RecordingRevocations, journal: Journal, form: dict[str, list[str]], error: type[OAuthError]
) -> None:
    tokens = KnownTokens(web=checked())
    with pytest.raises(error):
        await endpoint(log, journal, tokens).handle(form, client(WEB))
    assert tokens.checked == [] and log.revoked == []


async def test_a_matching_client_id_is_accepted(log: RecordingRevocations, journal: Journal) -> None:
    await endpoint(log, journal).handle({"token": ["web"], "client_id": [WEB]}, client(WEB))
    assert log.revoked == ["j1"]
