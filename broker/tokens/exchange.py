"""The token endpoint's logic, free of any web framework: form in, :class:`TokenResponse` or an OAuth error out.

Two grants, both for a client authenticated by its X.509-SVID (RFC 8705 §2.1 ``tls_client_auth``):

* RFC 8693 token exchange: ``subject_token`` is a JWT-SVID (``subject_token_type`` =
  ``urn:ietf:params:oauth:token-type:jwt``) whose ``aud`` contains this service's audience (its issuer URL) and
  whose ``sub`` is the client's SPIFFE ID. A JWT-SVID without the matching certificate key gets nothing.
* RFC 6749 §4.4 ``client_credentials``: the SPIFFE ID is the client; a ``client_id`` sent must equal it
  (RFC 8705 §2). The same ``client_id`` rule applies to token exchange.

Parameters (RFC 6749 §3.2): none may repeat (``invalid_request``) except ``audience`` and ``resource``, which RFC
8693 §2.1 lets repeat: this service issues a token for exactly one target, so more than one distinct target is
``invalid_target``; none is ``invalid_request``. An empty value counts as omitted (RFC 6749 §3.1). Delegation
(``actor_token``) is not supported. Policy decides audience, scopes and lifetime (:mod:`broker.tokens.policy`).

A subject token that is invalid, expired, for another audience or for another SPIFFE ID is ``invalid_grant``
(RFC 6749 §5.2: the grant "is invalid, expired, revoked, does not match ... or was issued to another client").
RFC 8693 §2.2.2 names ``invalid_request`` for an invalid subject token but adds "other error codes may also be
used, as appropriate"; the issue this service implements asks for ``invalid_grant``, which tells a client
precisely that the JWT-SVID (not the request syntax) was refused. Changing it is one place:
:meth:`TokenExchangeService._check_subject_token`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    UnsupportedGrantTypeError,
)
from broker.identity.bundle import JwtBundleSet
from broker.identity.errors import IdentityError
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.svid import JwtSvid
from broker.oauth.constants import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
)
from broker.oauth.form import select_target, single_values
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient, IssuedToken
from broker.tokens.policy import PolicyStore, parse_scope
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = [
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_TOKEN_EXCHANGE",
    "TOKEN_TYPE_ACCESS_TOKEN",
    "TOKEN_TYPE_JWT",
    "TokenExchangeService",
    "TokenResponse",
]

MAX_SUBJECT_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).

    ``token_type`` is ``Bearer``: RFC 8705 §3 binds the token to the certificate without defining a new token
    type, and resource servers check the binding (``cnf``) themselves; clients send it as a bearer token.
    """

    token: IssuedToken = field(repr=False)
    issued_token_type: str | None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": self.token.token, "token_type": "Bearer"}
        if self.issued_token_type is not None:
            body["issued_token_type"] = self.issued_token_type
        body["expires_in"] = self.token.expires_in
        if self.token.scopes:
            body["scope"] = " ".join(self.token.scopes)
        return body


class TokenExchangeService:
    """Handles a token request for an authenticated client; ``audience`` is what subject tokens must name."""

    def __init__(
        self,
        *,
        issuer: AccessTokenIssuer,
        policy_store: PolicyStore,
        jwt_bundles: Callable[[], JwtBundleSet],
        audience: str,
        clock: Callable[[], float] = time.time,
        leeway: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.policy_store = policy_store
        self._jwt_bundles = jwt_bundles
        self.audience = audience
        self._clock = clock
        self._leeway = leeway
        self._validated = ValidatedSvidCache()

    async def handle(self, form: Mapping[str, Sequence[str]], client: AuthenticatedClient) -> TokenResponse:
        """Validate the request, apply policy and issue; every refusal is an :class:`OAuthError`."""
        params, targets = single_values(form)
        grant_type = params.get("grant_type")
        if grant_type is None:
            raise InvalidRequestError("missing parameter 'grant_type'")
        if grant_type not in (GRANT_TOKEN_EXCHANGE, GRANT_CLIENT_CREDENTIALS):
            raise UnsupportedGrantTypeError("supported: token exchange (RFC 8693) and client_credentials")
        client_id = params.get("client_id")
        if client_id is not None and client_id != str(client.spiffe_id):
            raise InvalidClientError("client_id does not match the client certificate's SPIFFE ID (RFC 8705 §2)")
        issued_token_type = None
        if grant_type == GRANT_TOKEN_EXCHANGE:
            issued_token_type = _check_exchange_params(params)
        audience = select_target(targets)
        scopes = parse_scope(params.get("scope"))
        if grant_type == GRANT_TOKEN_EXCHANGE:  # the grant is checked before policy: a stolen JWT-SVID learns nothing
            self._check_subject_token(params["subject_token"], client)
        grant = self.policy_store.current().authorize(client.spiffe_id, audience, scopes)
        token = self.issuer.issue(
            client=client, audience=grant.audience, scopes=grant.scopes, max_lifetime=grant.max_lifetime
        )
        return TokenResponse(token, issued_token_type)

    def _check_subject_token(self, subject_token: str, client: AuthenticatedClient) -> None:
        """JWT-SVID §3-§4 validation with this service as audience; ``sub`` must be the client (else
        ``invalid_grant``, RFC 8693 §2.2.2). The reason code is reported, never the token."""
        if len(subject_token) > MAX_SUBJECT_TOKEN_CHARS:
            raise InvalidGrantError("subject_token is too large")
        bundles, now = self._jwt_bundles(), self._clock()
        key = ValidatedSvidCache.key(subject_token, self.audience)
        svid = self._validated.get(key, bundles, now=now, leeway=self._leeway)
        if svid is None:
            svid = self._validate_subject_token(subject_token, bundles, now)
            self._validated.put(key, svid, bundles)
        if svid.spiffe_id != client.spiffe_id:
            raise InvalidGrantError("subject_token was issued to a SPIFFE ID other than the client certificate's")

    def _validate_subject_token(self, subject_token: str, bundles: JwtBundleSet, now: float) -> JwtSvid:
        try:
            return validate_jwt_svid(
                subject_token, audience=self.audience, bundles=bundles, leeway=self._leeway, now=now
            )
        except IdentityError as exc:
            raise InvalidGrantError(f"subject_token is not a valid JWT-SVID for this service ({exc.reason})") from None
        except ValueError:  # e.g. characters outside ASCII; never echo the token
            raise InvalidGrantError("subject_token is not a valid JWT-SVID for this service") from None


def _check_exchange_params(params: Mapping[str, str]) -> str:
    """RFC 8693 §2.1 parameter rules; returns the ``issued_token_type`` to report."""
    if "subject_token" not in params:
        raise InvalidRequestError("missing parameter 'subject_token'")
    subject_token_type = params.get("subject_token_type")
    if subject_token_type is None:
        raise InvalidRequestError("missing parameter 'subject_token_type'")
    if subject_token_type != TOKEN_TYPE_JWT:
        raise InvalidRequestError(f"subject_token_type must be {TOKEN_TYPE_JWT} (a JWT-SVID)")
    if "actor_token" in params and "actor_token_type" not in params:
        raise InvalidRequestError("actor_token_type is required with actor_token (RFC 8693 §2.1)")
    if "actor_token_type" in params and "actor_token" not in params:
        raise InvalidRequestError("actor_token_type must not be sent without actor_token (RFC 8693 §2.1)")
    if "actor_token" in params:
        raise InvalidRequestError("delegation (actor_token) is not supported")
    requested = params.get("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN)
    if requested not in (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT):
        raise InvalidRequestError(f"requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_JWT}")
    return requested
