"""Tests for broker.tokens.client_auth.mtls: RFC 8705 §2.1 ``tls_client_auth`` without a network.

Over real TLS connections (once per connection, bundle changes, Basic credentials refused):
tests/unit/server/test_client_auth.py.
"""

from __future__ import annotations

import pytest

from broker.errors import InvalidClientError
from broker.tokens.client_auth import RequestContext
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.issuer import AuthenticatedClient
from tests.unit.tokens.endpoint_helpers import OTHER


@pytest.fixture
def method() -> TlsClientAuth:
    return TlsClientAuth(lambda: {})


@pytest.mark.parametrize(
    ("context", "applies"),
    [(RequestContext(), True), (RequestContext(authorization="Basic x"), False)],
    ids=["no-other-credentials", "authorization-header"],
)
def test_applies_to_every_request_without_other_credentials(
    method: TlsClientAuth, context: RequestContext, applies: bool
) -> None:
    assert method.applies(context) is applies
    assert method.name == "tls_client_auth"


def test_request_without_tls_is_invalid_client(method: TlsClientAuth) -> None:
    with pytest.raises(InvalidClientError) as caught:
        method.authenticate(RequestContext())
    assert caught.value.description == "mutual TLS with an X.509-SVID is required"


@pytest.mark.parametrize("params", [{}, {"client_id": "spiffe://example.org/ns/shop/sa/web"}], ids=["absent", "same"])
def test_client_id_absent_or_equal_to_the_spiffe_id_is_accepted(
    method: TlsClientAuth, client: AuthenticatedClient, params: dict[str, str]
) -> None:
    method.check_request(client, params)


def test_client_id_naming_another_spiffe_id_is_invalid_client(
    method: TlsClientAuth, client: AuthenticatedClient
) -> None:
    with pytest.raises(InvalidClientError) as caught:
        method.check_request(client, {"client_id": str(OTHER)})
    assert caught.value.description == "client_id does not match the client certificate's SPIFFE ID (RFC 8705 §2)"
