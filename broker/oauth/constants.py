"""The OAuth names the broker speaks, defined once: grant types, token types, client-auth methods.

* Grant types: RFC 8693 §2.1 token exchange, RFC 6749 §4.4 ``client_credentials``.
* Token type identifiers: RFC 8693 §3 (``...:token-type:jwt`` for a JWT-SVID sent as ``subject_token``,
  ``...:token-type:access_token`` for the issued token).
* Client authentication methods (RFC 8414 §2 ``token_endpoint_auth_methods_supported``): RFC 8705 §2.1
  ``tls_client_auth``; RFC 7523 §2.2 / OpenID Connect Core §9 ``private_key_jwt``.
* Client assertion types (RFC 7521 §4.2 ``client_assertion_type``): RFC 7523 §2.2 ``jwt-bearer``;
  draft-ietf-oauth-spiffe-client-auth ``jwt-spiffe`` (a JWT-SVID as the client's credential).
* Token types in a token response (RFC 6749 §7.1): ``Bearer``; RFC 9449 §5 ``DPoP``.
"""

from __future__ import annotations

__all__ = [
    "ASSERTION_TYPE_JWT_BEARER",
    "ASSERTION_TYPE_JWT_SPIFFE",
    "AUTH_PRIVATE_KEY_JWT",
    "AUTH_TLS_CLIENT_AUTH",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_TOKEN_EXCHANGE",
    "TOKEN_TYPE_ACCESS_TOKEN",
    "TOKEN_TYPE_BEARER",
    "TOKEN_TYPE_DPOP",
    "TOKEN_TYPE_JWT",
]

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a type URN, not a secret)
GRANT_CLIENT_CREDENTIALS = "client_credentials"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 (a type URN, not a secret)
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a type URN, not a secret)
AUTH_TLS_CLIENT_AUTH = "tls_client_auth"
AUTH_PRIVATE_KEY_JWT = "private_key_jwt"
ASSERTION_TYPE_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_TYPE_JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
TOKEN_TYPE_BEARER = "Bearer"  # noqa: S105 (a token type name, not a secret)
TOKEN_TYPE_DPOP = "DPoP"  # noqa: S105 (a token type name, not a secret)
