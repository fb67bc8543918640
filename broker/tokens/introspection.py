"""RFC 7662 token introspection (``/introspect``), framework-free: form and caller in, the §2.2 response out.

A request runs, in this order:

1. the caller authenticates as at the token endpoint, before the body is read (RFC 8705 §2.1
   ``tls_client_auth`` with its X.509-SVID; the web layer calls
   :meth:`broker.tokens.endpoint.TokenEndpoint.client_of`): otherwise 401 ``invalid_client`` (RFC 7662 §2.3,
   RFC 6749 §5.2);
2. the caller must be on the allow-list, ``[introspection] spiffe_ids`` (:class:`IntrospectionAccess`). RFC 7662
   §4 requires the endpoint to be authorized against token scanning but §2.3 names only the 401 for credentials
   that are invalid; these credentials are valid and simply not enough, which RFC 9110 §15.5.4 calls 403.
   So: 403 ``access_denied``, before the body is read;
3. parameters: none may repeat, ``token`` is REQUIRED (``invalid_request``), a ``client_id`` sent must name
   the caller (RFC 8705 §2); ``token_type_hint`` is a hint (§2.1) and changes nothing here;
4. the token must verify as one this broker issued and has not expired (:class:`~broker.tokens.presented.TokenCheck`:
   signature against the broker's own keys, ``iss``, ``typ``, times). The certificate binding is *not* checked:
   the caller is the resource server, not the token's holder; the response carries ``cnf`` so that the resource
   server checks the binding against its own client's certificate (RFC 8705 §3.2);
5. a caller restricted to some audiences (``[introspection] audiences``) may only learn about tokens for one of
   them: a token for another audience is "a token the protected resource is not allowed to know about" (§2.3);
6. the revocation log, read up to now before step 4 (:meth:`~broker.tokens.presented.Revocations.catch_up`: a
   revocation made on another replica is seen at once; a store that does not answer is the same 503 for every
   token, valid or not), is consulted: a revoked ``jti``, a revoked ``kid`` or a
   quarantined subject (including the quarantine's cutoff of tokens issued before it) is inactive.

Anything that fails steps 4-6 is answered ``{"active": false}`` and nothing else (§2.2, §2.3: not an error), so
the answer never says why. An active token gets the §2.2 members the token carries: ``active``, ``scope``,
``client_id``, ``sub``, ``aud``, ``iss``, ``exp``, ``iat``, ``nbf`` (when present), ``jti``, ``token_type``
(``Bearer``, as the token response said, RFC 6749 §5.1; ``DPoP`` for a DPoP-bound token, RFC 9449 §6.2) and
``cnf`` (RFC 8705 §3.2, RFC 9449 §6.2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import AccessDeniedError, ConfigError
from broker.identity.errors import IdentityError
from broker.identity.spiffeid import SpiffeId
from broker.oauth.form import single_values
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.presented import CheckedToken, Revocations, TokenCheck, token_parameter

__all__ = ["INACTIVE", "IntrospectionAccess", "IntrospectionEndpoint", "introspection_response"]

log = logging.getLogger(__name__)

INACTIVE: Mapping[str, Any] = {"active": False}
TOKEN_TYPE = "Bearer"  # noqa: S105 (a token type name, RFC 6749 §7.1)
TOKEN_TYPE_DPOP = "DPoP"  # noqa: S105 (RFC 9449 §6.2: MUST be DPoP for a DPoP-bound token)
_MEMBERS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "cnf")  # RFC 7662 §2.2 order


@dataclass(frozen=True)
class IntrospectionAccess:
    """Who may introspect (``callers``), and the audiences a restricted caller may learn about (others: any)."""

    callers: frozenset[SpiffeId] = frozenset()
    audiences: Mapping[SpiffeId, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, spiffe_ids: Iterable[str], audiences: Mapping[str, Sequence[str]]) -> IntrospectionAccess:
        """``[introspection] spiffe_ids`` and ``audiences``; a value that is not a SPIFFE ID, or a restriction for a
        caller not on the list, is a :class:`ConfigError` naming it."""
        callers = frozenset(_spiffe_id("spiffe_ids", value) for value in spiffe_ids)
        restricted: dict[SpiffeId, frozenset[str]] = {}
        for key, allowed in audiences.items():
            caller = _spiffe_id("audiences", key)
            if caller not in callers:
                raise ConfigError(f"introspection.audiences: {key!r} is not in introspection.spiffe_ids")
            restricted[caller] = frozenset(allowed)
        return cls(callers, restricted)

    def allows(self, caller: SpiffeId) -> bool:
        return caller in self.callers

    def may_know(self, caller: SpiffeId, token: CheckedToken) -> bool:
        allowed = self.audiences.get(caller)
        return allowed is None or not allowed.isdisjoint(token.audiences)


def _spiffe_id(key: str, value: str) -> SpiffeId:
    try:
        return SpiffeId.parse(value)
    except IdentityError:
        raise ConfigError(f"introspection.{key}: {value!r} is not a SPIFFE ID (spiffe://trust-domain/path)") from None


def introspection_response(token: CheckedToken) -> dict[str, Any]:
    """RFC 7662 §2.2: ``active: true`` and the members ``token`` carries, with ``token_type``."""
    body: dict[str, Any] = {"active": True}
    for name in _MEMBERS:
        if name in token.claims:
            body[name] = token.claims[name]
    cnf = token.claims.get("cnf")
    body["token_type"] = TOKEN_TYPE_DPOP if isinstance(cnf, dict) and "jkt" in cnf else TOKEN_TYPE
    return body


class IntrospectionEndpoint:
    """Steps 2-6 of the module docstring."""

    def __init__(
        self, *, client_auth: TokenEndpoint, access: IntrospectionAccess, tokens: TokenCheck, revocations: Revocations
    ) -> None:
        self._client_auth = client_auth
        self.access = access
        self._tokens = tokens
        self._revocations = revocations

    def authorize(self, client: AuthenticatedClient) -> None:
        """Step 2, before the body is read: 403 ``access_denied`` for a caller not on the allow-list."""
        if not self.access.allows(client.spiffe_id):
            raise AccessDeniedError("this SPIFFE ID may not introspect tokens (not in [introspection] spiffe_ids)")

    async def handle(self, form: Mapping[str, Sequence[str]], client: AuthenticatedClient) -> Mapping[str, Any]:
        """Steps 2-6 (step 2 again: the web layer runs it before reading the body): the §2.2 response."""
        self.authorize(client)
        params, _ = single_values(form)
        self._client_auth.check_client(client, params)
        presented = token_parameter(params)
        # The log is read first, whatever the token: when the store does not answer every token gets the same
        # 503, so the failure does not tell a valid token from an invalid one.
        await self._revocations.catch_up()
        checked = await self._tokens.check(presented)
        if checked is None or not self.access.may_know(client.spiffe_id, checked):
            return INACTIVE
        if self._revocations.refusal(checked) is not None:
            return INACTIVE
        log.debug("introspection by %s: jti=%s is active", client.spiffe_id, checked.jti)
        return introspection_response(checked)
