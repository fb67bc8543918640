"""RFC 8693 token exchange with a JWT-SVID as ``subject_token``, for a client authenticated by its X.509-SVID.

The ``subject_token`` is a JWT-SVID (``subject_token_type`` = ``urn:ietf:params:oauth:token-type:jwt``) whose
``aud`` contains this service's audience (its issuer URL) and whose ``sub`` is the client's SPIFFE ID. A JWT-SVID
without the matching certificate key gets nothing.

Checks, in the order the code runs them:

1. :meth:`TokenExchangeGrant.validate_request` (RFC 8693 §2.1, ``invalid_request``): ``subject_token`` and
   ``subject_token_type`` present, the type is a JWT; ``actor_token`` and ``actor_token_type`` come together,
   and delegation (``actor_token``) is not supported; ``requested_token_type`` is an access token or a JWT;
2. :meth:`TokenExchangeGrant.check_grant` (``invalid_grant``): the token is at most 16 KiB, is a valid JWT-SVID
   for this audience (JWT-SVID §3-§4, memoised by the injected :class:`~broker.tokens.svid_cache.ValidatedSvidCache`)
   and names the client's SPIFFE ID.

A subject token that is invalid, expired, for another audience or for another SPIFFE ID is ``invalid_grant``
(RFC 6749 §5.2: the grant "is invalid, expired, revoked, does not match ... or was issued to another client").
RFC 8693 §2.2.2 names ``invalid_request`` for an invalid subject token but adds "other error codes may also be
used, as appropriate"; the issue this service implements asks for ``invalid_grant``, which tells a client
precisely that the JWT-SVID (not the request syntax) was refused. Changing it is one place:
:meth:`TokenExchangeGrant.check_grant`. The reason code is reported, never the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from broker.errors import InvalidGrantError, InvalidRequestError
from broker.identity.bundle import JwtBundleSet
from broker.identity.errors import IdentityError
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.svid import JwtSvid
from broker.oauth.constants import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = ["MAX_SUBJECT_TOKEN_CHARS", "TokenExchangeGrant"]

MAX_SUBJECT_TOKEN_CHARS = 16 * 1024


class TokenExchangeGrant:
    """The RFC 8693 grant; ``audience`` is what subject tokens must name, ``memo`` the validated JWT-SVIDs."""

    grant_type = GRANT_TOKEN_EXCHANGE
    label = "token exchange (RFC 8693)"

    def __init__(
        self,
        *,
        jwt_bundles: Callable[[], JwtBundleSet],
        audience: str,
        memo: ValidatedSvidCache,
        clock: Callable[[], float] = time.time,
        leeway: float = 30.0,
    ) -> None:
        self._jwt_bundles = jwt_bundles
        self.audience = audience
        self._validated = memo
        self._clock = clock
        self._leeway = leeway

    def validate_request(self, params: Mapping[str, str]) -> str | None:
        """RFC 8693 §2.1 parameter rules; returns the ``issued_token_type`` to report."""
        if "subject_token" not in params:
            raise InvalidRequestError("missing parameter 'subject_token'")
        subject_token_type = params.get("subject_token_type")
        if subject_token_type is None:
            raise InvalidRequestError("missing parameter 'subject_token_type'")
        if subject_token_type != TOKEN_TYPE_JWT:
            raise InvalidRequestError(f"subject_token_type must be {TOKEN_TYPE_JWT} (a JWT-SVID)")
        _check_actor(params)
        requested = params.get("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN)
        if requested not in (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT):
            raise InvalidRequestError(f"requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_JWT}")
        return requested

    def check_grant(self, params: Mapping[str, str], client: AuthenticatedClient) -> None:
        """JWT-SVID §3-§4 validation with this service as audience; ``sub`` must be the client."""
        subject_token = params["subject_token"]
        if len(subject_token) > MAX_SUBJECT_TOKEN_CHARS:
            raise InvalidGrantError("subject_token is too large")
        bundles, now = self._jwt_bundles(), self._clock()
        key = ValidatedSvidCache.key(subject_token, self.audience)
        svid = self._validated.get(key, bundles, now=now, leeway=self._leeway)
        if svid is None:
            svid = self._validate(subject_token, bundles, now)
            self._validated.put(key, svid, bundles)
        if svid.spiffe_id != client.spiffe_id:
            raise InvalidGrantError("subject_token was issued to a SPIFFE ID other than the client certificate's")

    def _validate(self, subject_token: str, bundles: JwtBundleSet, now: float) -> JwtSvid:
        try:
            return validate_jwt_svid(
                subject_token, audience=self.audience, bundles=bundles, leeway=self._leeway, now=now
            )
        except IdentityError as exc:
            raise InvalidGrantError(f"subject_token is not a valid JWT-SVID for this service ({exc.reason})") from None
        except ValueError:  # e.g. characters outside ASCII; never echo the token
            raise InvalidGrantError("subject_token is not a valid JWT-SVID for this service") from None


def _check_actor(params: Mapping[str, str]) -> None:
    """RFC 8693 §2.1: ``actor_token`` and ``actor_token_type`` come together; delegation is not supported."""
    if "actor_token" in params and "actor_token_type" not in params:
        raise InvalidRequestError("actor_token_type is required with actor_token (RFC 8693 §2.1)")
    if "actor_token_type" in params and "actor_token" not in params:
        raise InvalidRequestError("actor_token_type must not be sent without actor_token (RFC 8693 §2.1)")
    if "actor_token" in params:
        raise InvalidRequestError("delegation (actor_token) is not supported")
