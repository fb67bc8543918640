"""Tests for broker.tokens.introspection: RFC 7662 §2.1-2.3 at the endpoint, with fake token checks and log."""

from __future__ import annotations

import pytest

from broker.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
    StoreUnavailableError,
)
from broker.tokens.introspection import INACTIVE, IntrospectionAccess, IntrospectionEndpoint
from tests.unit.tokens.endpoint_helpers import API, ISSUER
from tests.unit.tokens.presented_helpers import (
    RS,
    WEB,
    KnownTokens,
    RecordingRevocations,
    checked,
    client,
    client_auth,
)

OTHER_API = "https://billing.example.org"
RESTRICTED = "spiffe://example.org/ns/billing/sa/api"


def endpoint(log: RecordingRevocations, tokens: KnownTokens | None = None) -> IntrospectionEndpoint:
    access = IntrospectionAccess.parse([RS, RESTRICTED], {RESTRICTED: [OTHER_API]})
    return IntrospectionEndpoint(
        client_auth=client_auth(),
        access=access,
        tokens=tokens or KnownTokens(web=checked(), nbf=checked(jti="j2", nbf=1800000000, scope="orders:read")),
        revocations=log,
    )


async def test_an_active_token_is_described_with_the_rfc_7662_members_it_carries() -> None:
    log = RecordingRevocations()
    body = await endpoint(log).handle({"token": ["web"], "token_type_hint": ["access_token"]}, client(RS))
    assert body == {
        "active": True,
        "client_id": WEB,
        "sub": WEB,
        "aud": API,
        "iss": ISSUER,
        "exp": 1800000060,
        "iat": 1800000000,
        "jti": "j1",
        "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
        "token_type": "Bearer",
    }
    assert log.catch_ups == 1, "the log is read after the request arrived"
    described = await endpoint(log).handle({"token": ["nbf"]}, client(RS))
    assert (described["scope"], described["nbf"]) == ("orders:read", 1800000000)


async def test_a_token_the_log_cuts_off_is_only_inactive() -> None:
    assert await endpoint(RecordingRevocations("j1")).handle({"token": ["web"]}, client(RS)) == INACTIVE


async def test_a_token_that_does_not_verify_is_only_inactive() -> None:
    assert await endpoint(RecordingRevocations()).handle({"token": ["forged"]}, client(RS)) == {"active": False}


class SilentStore(RecordingRevocations):
    async def catch_up(self) -> None:
        raise StoreUnavailableError("state store unavailable; retry later")


async def test_a_silent_store_is_the_same_503_for_a_forged_token_and_a_valid_one() -> None:
    tokens = KnownTokens(web=checked())
    for presented in ("forged", "web"):  # the failure must not tell them apart
        with pytest.raises(StoreUnavailableError):
            await endpoint(SilentStore(), tokens).handle({"token": [presented]}, client(RS))


async def test_a_restricted_caller_learns_nothing_of_a_token_for_another_audience() -> None:
    log = RecordingRevocations()
    tokens = KnownTokens(web=checked(), billing=checked(jti="j3", audience=OTHER_API))
    assert await endpoint(log, tokens).handle({"token": ["web"]}, client(RESTRICTED)) == INACTIVE
    assert (await endpoint(log, tokens).handle({"token": ["billing"]}, client(RESTRICTED)))["active"] is True


async def test_a_caller_off_the_allow_list_is_refused_access_denied_before_the_token_is_checked() -> None:
    tokens = KnownTokens(web=checked())
    introspection = endpoint(RecordingRevocations(), tokens)
    with pytest.raises(AccessDeniedError) as caught:
        introspection.authorize(client(WEB))
    assert caught.value.status == 403
    with pytest.raises(AccessDeniedError):
        await introspection.handle({"token": ["web"]}, client(WEB))
    assert tokens.checked == []


@pytest.mark.parametrize(
    ("form", "error"),
    [
        pytest.param({}, InvalidRequestError, id="no-token"),
        pytest.param({"token": ["web", "web"]}, InvalidRequestError, id="repeated-token"),
        pytest.param({"token": ["web"], "client_id": [WEB]}, InvalidClientError, id="client-id-not-the-caller"),
    ],
)
async def test_a_malformed_request_is_refused(form: dict[str, list[str]], error: type[OAuthError]) -> None:
    with pytest.raises(error):
        await endpoint(RecordingRevocations()).handle(form, client(RS))


@pytest.mark.parametrize(
    ("spiffe_ids", "audiences", "message"),
    [
        pytest.param(["https://rs"], {}, "introspection.spiffe_ids: 'https://rs' is not a SPIFFE ID", id="bad-id"),
        pytest.param([RS], {"nope": ["a"]}, "introspection.audiences: 'nope' is not a SPIFFE ID", id="bad-key"),
        pytest.param([RS], {WEB: [API]}, f"{WEB!r} is not in introspection.spiffe_ids", id="not-allowed"),
    ],
)
def test_the_introspection_config_is_refused_naming_the_bad_value(
    spiffe_ids: list[str], audiences: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        IntrospectionAccess.parse(spiffe_ids, audiences)
    assert message in caught.value.description


def test_an_empty_allow_list_allows_nobody() -> None:
    assert not IntrospectionAccess.parse([], {}).allows(client(RS).spiffe_id)
