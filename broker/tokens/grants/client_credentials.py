"""RFC 6749 §4.4 ``client_credentials``: the authenticated client (its SPIFFE ID) is the resource owner.

Nothing to check beyond client authentication: no extra parameters (§4.4.2), no ``issued_token_type`` (that is
RFC 8693's). Target, scope and lifetime are policy's (:mod:`broker.tokens.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS
from broker.tokens.issuer import AuthenticatedClient

__all__ = ["ClientCredentialsGrant"]


class ClientCredentialsGrant:
    """The ``client_credentials`` grant."""

    grant_type = GRANT_CLIENT_CREDENTIALS
    label = "client_credentials"

    def validate_request(self, params: Mapping[str, str]) -> str | None:
        return None

    def check_grant(self, params: Mapping[str, str], client: AuthenticatedClient) -> None:
        return None
