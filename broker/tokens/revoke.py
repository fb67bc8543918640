"""RFC 7009 token revocation (``/revoke``), framework-free: form and caller in, nothing (200) or an OAuthError out.

A request runs, in this order (RFC 7009 §2.1):

1. the caller authenticates as at the token endpoint, before the body is read (RFC 8705 §2.1
   ``tls_client_auth``: the web layer calls :meth:`broker.tokens.endpoint.TokenEndpoint.client_of`); otherwise
   401 ``invalid_client`` (§2.2.1, RFC 6749 §5.2);
2. parameters: none may repeat and ``token`` is REQUIRED (``invalid_request``, RFC 6749 §3.2, §5.2); a
   ``client_id`` sent must name the caller (RFC 8705 §2). ``token_type_hint`` is a hint (§2.1): this server
   issues one kind of token, the access token, and looks a token up whatever the hint says. So no hint is
   refused and ``unsupported_token_type`` (§2.2.1) is never the answer: every token type this server issues can
   be revoked. A refresh token, which it never issues, is an unknown token (step 3);
3. the token must verify as one this broker issued and that has not expired (:class:`TokenCheck`: signature
   against the broker's own keys, ``iss``, ``typ``, times), before anything else is looked at, so a forged
   token cannot revoke another client's ``jti``. Anything else (malformed, forged, expired, unknown, another
   issuer's) gets 200 and changes nothing (§2.2: "invalid tokens do not cause an error response");
4. the token must have been issued to the caller (§2.1): its ``sub`` (which is its ``client_id``) is the
   caller's SPIFFE ID, or the caller is an admin (``[admin] spiffe_ids``). Otherwise 400 ``invalid_grant``:
   of the RFC 6749 §5.2 codes it is the one defined for a grant "issued to another client". This reveals
   nothing the caller could not learn itself: it holds the token and the JWKS is public;
5. the token's ``jti`` goes on the revocation log until its ``exp`` (:meth:`Revocations.revoke`), unless the log
   already cuts the token off (already revoked, its key revoked, its subject quarantined): then 200 and no
   second entry. A new entry is audited (``token.revoked``) before the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from broker.audit.events import AuditEvent, TokenRevocationRecorded
from broker.errors import InvalidGrantError
from broker.identity.spiffeid import SpiffeId
from broker.oauth.form import single_values
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.presented import CheckedToken, Revocations, TokenCheck, token_parameter

__all__ = ["RevocationEndpoint"]

log = logging.getLogger(__name__)

RecordNow = Callable[[AuditEvent], Awaitable[object]]


class RevocationEndpoint:
    """Steps 2-5 of the module docstring; ``record_now`` writes the audit event through (the audit trail's)."""

    def __init__(
        self,
        *,
        client_auth: TokenEndpoint,
        tokens: TokenCheck,
        revocations: Revocations,
        admins: frozenset[SpiffeId],
        record_now: RecordNow | None = None,
    ) -> None:
        self._client_auth = client_auth
        self._tokens = tokens
        self._revocations = revocations
        self._admins = admins
        self._record_now = record_now

    async def handle(self, form: Mapping[str, Sequence[str]], client: AuthenticatedClient) -> None:
        """Revoke the form's token if the caller may (200 in every case that returns)."""
        params, _ = single_values(form)
        self._client_auth.check_client(client, params)
        checked = await self._tokens.check(token_parameter(params))
        if checked is None:
            return  # RFC 7009 §2.2: an invalid token is answered 200, and nothing changes
        by = self._by(checked, client)
        if not await self._revocations.revoke(checked):
            return  # already cut off by the log: no second entry
        log.info("revoked token jti=%s of %s (by %s %s)", checked.jti, checked.subject, by, client.spiffe_id)
        if self._record_now is not None:
            await self._record_now(_event(checked, by, client))

    def _by(self, token: CheckedToken, client: AuthenticatedClient) -> str:
        if token.subject == str(client.spiffe_id):
            return "client"
        if client.spiffe_id in self._admins:
            return "admin"
        raise InvalidGrantError("the token was issued to another client (RFC 7009 §2.1)")


def _event(token: CheckedToken, by: str, client: AuthenticatedClient) -> TokenRevocationRecorded:
    return TokenRevocationRecorded(
        jti=token.jti, sub=token.subject, exp=int(token.expires_at.timestamp()), by=by, actor=str(client.spiffe_id)
    )
