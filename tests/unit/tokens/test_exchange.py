"""Tests for broker.tokens.exchange: RFC 8693 token exchange and client_credentials for SPIFFE clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    UnsupportedGrantTypeError,
)
from broker.identity.spiffeid import SpiffeId
from broker.oauth.form import single_values
from broker.tokens.exchange import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
    TokenExchangeService,
)
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore, KeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy

ISSUER = "https://broker.example.org:8443"
API = "https://api.example.org"
OTHER = SpiffeId.parse("spiffe://example.org/ns/shop/sa/other")
POLICY = """\
rules:
  - spiffe_id: spiffe://example.org/ns/shop/sa/web
    audiences: ["https://api.example.org"]
    scopes: ["orders:read", "orders:write"]
    max_token_lifetime: 120
"""
Decoder = Callable[[str, KeyStore], tuple[dict[str, Any], dict[str, Any]]]


@pytest.fixture
def key_store() -> InMemoryKeyStore:
    return InMemoryKeyStore()


@pytest.fixture
def service(ca: DevCA, key_store: InMemoryKeyStore) -> TokenExchangeService:
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=key_store)
    return TokenExchangeService(
        issuer=issuer,
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        jwt_bundles=lambda: {ca.trust_domain: ca.jwt_bundle()},
        audience=ISSUER,
    )


def exchange_form(token: str, **extra: str | list[str]) -> dict[str, list[str]]:
    form: dict[str, Any] = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": API,
        **extra,
    }
    return {k: v if isinstance(v, list) else [v] for k, v in form.items()}


def cc_form(**extra: str | list[str]) -> dict[str, list[str]]:
    form: dict[str, Any] = {"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API, **extra}
    return {k: v if isinstance(v, list) else [v] for k, v in form.items()}


def jwt_svid(ca: DevCA, client: AuthenticatedClient, **kwargs: Any) -> str:
    spiffe_id = kwargs.pop("spiffe_id", client.spiffe_id)
    audience = kwargs.pop("audience", [ISSUER])
    return ca.mint_jwt_svid(spiffe_id, audience, ttl=kwargs.pop("ttl", 300), **kwargs).token


async def test_exchange_issues_bound_token_for_matching_jwt_svid(
    service: TokenExchangeService, ca: DevCA, client: AuthenticatedClient, key_store: KeyStore, decode: Decoder
) -> None:
    form = exchange_form(jwt_svid(ca, client), scope="orders:read")
    body = (await service.handle(form, client)).to_json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == TOKEN_TYPE_ACCESS_TOKEN
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 120, "orders:read")
    header, claims = decode(body["access_token"], key_store)
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == str(client.spiffe_id)
    assert claims["aud"] == API and claims["cnf"] == {"x5t#S256": client.x5t_s256()}


async def test_exchange_reports_jwt_issued_token_type_when_requested(
    service: TokenExchangeService, ca: DevCA, client: AuthenticatedClient
) -> None:
    form = exchange_form(jwt_svid(ca, client), requested_token_type=TOKEN_TYPE_JWT)
    assert (await service.handle(form, client)).to_json()["issued_token_type"] == TOKEN_TYPE_JWT


async def test_client_credentials_issues_token_without_issued_token_type(
    service: TokenExchangeService, client: AuthenticatedClient
) -> None:
    body = (await service.handle(cc_form(client_id=str(client.spiffe_id), resource=API), client)).to_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}


async def test_audience_and_resource_naming_same_target_are_one_target(
    service: TokenExchangeService, client: AuthenticatedClient
) -> None:
    assert (await service.handle(cc_form(resource=API), client)).token.audience == API


BAD_REQUESTS: list[tuple[str, Callable[[DevCA, AuthenticatedClient], dict[str, list[str]]], type[OAuthError]]] = [
    ("missing-grant-type", lambda ca, c: {"audience": [API]}, InvalidRequestError),
    ("unknown-grant-type", lambda ca, c: cc_form(grant_type="password"), UnsupportedGrantTypeError),
    ("repeated-grant-type", lambda ca, c: cc_form(grant_type=[GRANT_CLIENT_CREDENTIALS] * 2), InvalidRequestError),
    ("repeated-scope", lambda ca, c: cc_form(scope=["orders:read", "orders:read"]), InvalidRequestError),
    ("repeated-empty", lambda ca, c: cc_form(scope=["", ""]), InvalidRequestError),
    ("client-id-mismatch", lambda ca, c: cc_form(client_id=str(OTHER)), InvalidClientError),
    (
        "exchange-client-id-mismatch",
        lambda ca, c: exchange_form(jwt_svid(ca, c), client_id=str(OTHER)),
        InvalidClientError,
    ),
    ("missing-target", lambda ca, c: {"grant_type": [GRANT_CLIENT_CREDENTIALS]}, InvalidRequestError),
    ("empty-target", lambda ca, c: cc_form(audience=""), InvalidRequestError),
    ("two-audiences", lambda ca, c: cc_form(audience=[API, "https://b"]), InvalidTargetError),
    ("audience-resource-disagree", lambda ca, c: cc_form(resource="https://b"), InvalidTargetError),
    ("resource-not-absolute", lambda ca, c: cc_form(audience=[], resource="api"), InvalidTargetError),
    ("resource-with-fragment", lambda ca, c: cc_form(audience=[], resource=API + "#x"), InvalidTargetError),
    ("audience-outside-policy", lambda ca, c: cc_form(audience="https://evil"), InvalidTargetError),
    ("scope-outside-policy", lambda ca, c: cc_form(scope="orders:read admin"), InvalidScopeError),
    ("malformed-scope", lambda ca, c: cc_form(scope="a  b"), InvalidScopeError),
    ("missing-subject-token", lambda ca, c: exchange_form("", subject_token=[]), InvalidRequestError),
    (
        "missing-subject-token-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), subject_token_type=[]),
        InvalidRequestError,
    ),
    (
        "wrong-subject-token-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), subject_token_type=TOKEN_TYPE_ACCESS_TOKEN),
        InvalidRequestError,
    ),
    ("actor-token-without-type", lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token="x"), InvalidRequestError),
    (
        "actor-token-type-alone",
        lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token_type=TOKEN_TYPE_JWT),
        InvalidRequestError,
    ),
    (
        "actor-token-delegation",
        lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token="x", actor_token_type=TOKEN_TYPE_JWT),
        InvalidRequestError,
    ),
    (
        "unsupported-requested-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), requested_token_type="urn:x"),
        InvalidRequestError,
    ),
    ("jwt-svid-for-other-id", lambda ca, c: exchange_form(jwt_svid(ca, c, spiffe_id=OTHER)), InvalidGrantError),
    (
        "jwt-svid-wrong-audience",
        lambda ca, c: exchange_form(jwt_svid(ca, c, audience=["https://other"])),
        InvalidGrantError,
    ),
    ("jwt-svid-expired", lambda ca, c: exchange_form(jwt_svid(ca, c, ttl=-120)), InvalidGrantError),
    (
        "jwt-svid-foreign-signer",
        lambda ca, c: exchange_form(jwt_svid(DevCA.ephemeral("example.org"), c)),
        InvalidGrantError,
    ),
    ("jwt-svid-garbage", lambda ca, c: exchange_form("not.a.jwt"), InvalidGrantError),
    ("jwt-svid-non-ascii", lambda ca, c: exchange_form("é.é.é"), InvalidGrantError),
    ("jwt-svid-too-large", lambda ca, c: exchange_form("a" * 20000), InvalidGrantError),
]


@pytest.mark.parametrize(
    ("form_for", "error"), [(f, e) for _, f, e in BAD_REQUESTS], ids=[i for i, _, _ in BAD_REQUESTS]
)
async def test_bad_request_is_refused_with_its_error_and_issues_nothing(
    service: TokenExchangeService,
    ca: DevCA,
    client: AuthenticatedClient,
    form_for: Callable[[DevCA, AuthenticatedClient], dict[str, list[str]]],
    error: type[OAuthError],
) -> None:
    with pytest.raises(OAuthError) as info:
        await service.handle(form_for(ca, client), client)
    assert type(info.value) is error
    assert service.issuer.issued_count == 0


async def test_exchange_error_never_echoes_subject_token(
    service: TokenExchangeService, ca: DevCA, client: AuthenticatedClient
) -> None:
    token = jwt_svid(ca, client, spiffe_id=OTHER)
    with pytest.raises(InvalidGrantError) as info:
        await service.handle(exchange_form(token), client)
    for part in token.split("."):
        assert part not in info.value.description


async def test_exchange_uses_injected_clock_for_jwt_svid_expiry(
    ca: DevCA, client: AuthenticatedClient, key_store: InMemoryKeyStore
) -> None:
    service = TokenExchangeService(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        jwt_bundles=lambda: {ca.trust_domain: ca.jwt_bundle()},
        audience=ISSUER,
        clock=lambda: time.time() + 3600,
    )
    with pytest.raises(InvalidGrantError):
        await service.handle(exchange_form(jwt_svid(ca, client)), client)


def test_single_values_drops_empty_values_and_keeps_targets_multi() -> None:
    single, multi = single_values({"a": [""], "b": ["x"], "audience": ["1", "2"], "resource": [""]})
    assert single == {"b": "x"}
    assert multi == {"audience": ["1", "2"], "resource": []}


@pytest.mark.parametrize(
    ("name", "shown"),
    [("scope", "'scope'"), ("x-canary-c4n4ry", "(unknown)")],
    ids=["known-parameter-named", "unknown-name-not-echoed"],
)
def test_repeated_parameter_error_names_only_known_parameters(name: str, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        single_values({name: ["a", "b"]})
    assert caught.value.description == f"parameter {shown} is repeated"
    assert "c4n4ry" not in str(caught.value)
