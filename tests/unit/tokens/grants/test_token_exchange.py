"""Tests for broker.tokens.grants.token_exchange: RFC 8693 token exchange of a JWT-SVID, through the endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.errors import InvalidGrantError
from broker.oauth.constants import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore, KeyStore
from tests.unit.tokens.endpoint_helpers import API, OTHER, exchange_form, jwt_svid, make_endpoint

Decoder = Callable[[str, KeyStore], tuple[dict[str, Any], dict[str, Any]]]


async def test_exchange_issues_bound_token_for_matching_jwt_svid(
    endpoint: TokenEndpoint, ca: DevCA, client: AuthenticatedClient, key_store: KeyStore, decode: Decoder
) -> None:
    form = exchange_form(jwt_svid(ca, client), scope="orders:read")
    body = (await endpoint.handle(form, client)).to_json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == TOKEN_TYPE_ACCESS_TOKEN
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 120, "orders:read")
    header, claims = decode(body["access_token"], key_store)
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == str(client.spiffe_id)
    assert claims["aud"] == API and claims["cnf"] == {"x5t#S256": client.x5t_s256()}


async def test_exchange_reports_jwt_issued_token_type_when_requested(
    endpoint: TokenEndpoint, ca: DevCA, client: AuthenticatedClient
) -> None:
    form = exchange_form(jwt_svid(ca, client), requested_token_type=TOKEN_TYPE_JWT)
    assert (await endpoint.handle(form, client)).to_json()["issued_token_type"] == TOKEN_TYPE_JWT


async def test_exchange_error_never_echoes_subject_token(
    endpoint: TokenEndpoint, ca: DevCA, client: AuthenticatedClient
) -> None:
    token = jwt_svid(ca, client, spiffe_id=OTHER)
    with pytest.raises(InvalidGrantError) as info:
        await endpoint.handle(exchange_form(token), client)
    for part in token.split("."):
        assert part not in info.value.description


async def test_exchange_uses_injected_clock_for_jwt_svid_expiry(
    ca: DevCA, client: AuthenticatedClient, key_store: InMemoryKeyStore
) -> None:
    endpoint = make_endpoint(
        key_store=key_store,
        jwt_bundles=lambda: {ca.trust_domain: ca.jwt_bundle()},
        clock=lambda: time.time() + 3600,
    )
    with pytest.raises(InvalidGrantError):
        await endpoint.handle(exchange_form(jwt_svid(ca, client)), client)
