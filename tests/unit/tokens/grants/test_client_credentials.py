"""Tests for broker.tokens.grants.client_credentials: RFC 6749 §4.4 for a SPIFFE client, through the endpoint."""

from __future__ import annotations

from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from tests.unit.tokens.endpoint_helpers import API, cc_form


async def test_client_credentials_issues_token_without_issued_token_type(
    endpoint: TokenEndpoint, client: AuthenticatedClient
) -> None:
    body = (await endpoint.handle(cc_form(client_id=str(client.spiffe_id), resource=API), client)).to_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
