"""RFC 7523 §2.2 client authentication with a JWT the client signs with its own private key (``private_key_jwt``,
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``), for registered clients
(:mod:`broker.tokens.clients`).

Checks, in the order the code runs them (every refusal ``invalid_client``, RFC 7521 §4.2.1):

1. the assertion is one compact JWS (RFC 7515 §7.1, at most 16 KiB, strict JSON);
2. header: only ``alg``, ``kid``, ``typ`` (so never ``jwk``, ``jku``, ``x5u``, ``x5c``: the key is never chosen by
   the token; ``crit`` is refused, RFC 7515 §4.1.11); ``typ`` absent, ``JWT`` or ``client-authentication+jwt``
   (RFC 7523bis §3.2; other explicit types, such as ``dpop+jwt`` or ``at+jwt``, are other kinds of JWT);
3. ``iss`` = ``sub`` = the ``client_id`` (RFC 7523 §3 items 1-2), a registered, enabled client; a ``client_id``
   form parameter, if sent, is the same (RFC 7521 §4.2);
4. ``alg`` is one of the client's registered algorithms (all asymmetric: never ``none`` or HMAC, RFC 8725 §3.1);
5. the key: the client's JWK with that ``kid`` (without ``kid``, its only key); the JWK's own ``alg`` and ``use``,
   when set, fit; the signature verifies (RFC 7515 §5.2);
6. ``aud``, ``exp``, lifetime, ``nbf``, ``iat`` (:mod:`broker.tokens.client_auth.assertion`);
7. ``jti`` is required and single-use (RFC 7523 §3 item 7): recorded in the replay cache until ``exp`` + leeway;
8. a client certificate on the same request must name the client's SPIFFE ID (RFC 6749 §2.3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from broker.errors import InvalidClientError
from broker.identity.spiffeid import SpiffeId
from broker.jose import jws
from broker.jose.errors import JoseError
from broker.jose.jwk import PublicKeyCache
from broker.oauth.constants import ASSERTION_TYPE_JWT_BEARER, AUTH_PRIVATE_KEY_JWT
from broker.oauth.replay import ReplayCache, ReplayKind, replay_key
from broker.tokens.client_auth import CheckedAssertion
from broker.tokens.client_auth.assertion import check_audience, check_times, jti_of, record_use
from broker.tokens.clients import RegisteredClient
from broker.tokens.drift import DriftSource, DriftTracker
from broker.tokens.issuer import AuthenticatedClient

__all__ = ["ClientKeys", "ClientLookup", "JwtBearerAuth"]

ALLOWED_ALGORITHMS = jws.ALGORITHMS
HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
ACCEPTED_TYP = frozenset({"application/jwt", "application/client-authentication+jwt"})  # RFC 7515 §4.1.9 form


class ClientLookup(Protocol):
    def get(self, client_id: str) -> RegisteredClient | None:
        """The registered client (the replica's current view); ``temporarily_unavailable`` if it is stale."""
        ...


class ClientKeys(Protocol):
    async def keys(self, client: RegisteredClient, *, kid: str | None) -> Sequence[Mapping[str, Any]]:
        """The client's public JWKs: inline, or fetched from its ``jwks_uri`` (an unknown ``kid`` may refresh)."""
        ...


class JwtBearerAuth:
    """``private_key_jwt`` against the registry ``clients`` and their ``keys``, for audience ``issuer``."""

    name = AUTH_PRIVATE_KEY_JWT
    signing_algorithms = tuple(sorted(ALLOWED_ALGORITHMS))
    assertion_type = ASSERTION_TYPE_JWT_BEARER

    def __init__(
        self,
        *,
        issuer: str,
        clients: ClientLookup,
        keys: ClientKeys,
        replay: ReplayCache,
        drift: DriftTracker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._clients = clients
        self._keys = keys
        self._replay = replay
        self._drift = drift
        self._clock = clock

    async def authenticate(
        self, assertion: str, params: Mapping[str, str], transport: AuthenticatedClient | None
    ) -> AuthenticatedClient:
        checked = await self.check(assertion, params, transport)
        await checked.spend()
        return checked.client

    async def check(
        self, assertion: str, params: Mapping[str, str], transport: AuthenticatedClient | None
    ) -> CheckedAssertion:
        parsed = _parse(assertion)
        client = self._client(parsed.payload, params)
        alg = parsed.header.get("alg")
        if alg not in client.algorithms:
            raise InvalidClientError("client assertion 'alg' is not one this client registered")
        kid = parsed.header.get("kid")
        key = _select_key(await self._keys.keys(client, kid=kid if isinstance(kid, str) else None), kid, alg)
        try:
            jws.verify(parsed, alg, _CLIENT_KEYS.get(key).key)
        except JoseError:
            raise InvalidClientError("client assertion signature does not verify with the client's keys") from None
        now, leeway = self._clock(), self._drift.leeway
        times = check_times(parsed.payload, now=now, leeway=leeway, max_lifetime=client.max_assertion_lifetime)
        check_audience(parsed.payload, self._issuer)
        jti = jti_of(parsed.payload)
        if jti is None:
            raise InvalidClientError("client assertion has no 'jti' (RFC 7523 §3 item 7: required here)")
        spiffe_id = SpiffeId.parse(client.spiffe_id)
        if transport is not None and transport.spiffe_id != spiffe_id:
            raise InvalidClientError("client assertion and client certificate name different clients")
        use = replay_key(ReplayKind.CLIENT_ASSERTION, client.client_id, jti)

        async def spend() -> None:
            if not await record_use(self._replay, use, now=now, exp=times.exp, leeway=leeway):
                raise InvalidClientError("client assertion was already used ('jti' replayed)")
            if times.iat is not None:
                self._drift.record(client.client_id, DriftSource.ASSERTION, now=now, iat=times.iat)

        leaf = None if transport is None else transport.leaf
        authenticated = AuthenticatedClient(spiffe_id=spiffe_id, leaf=leaf, auth_method=self.name,
                                            registered_id=client.client_id)  # fmt: skip
        return CheckedAssertion(authenticated, spend)

    def _client(self, claims: Mapping[str, Any], params: Mapping[str, str]) -> RegisteredClient:
        iss, sub = claims.get("iss"), claims.get("sub")
        if not isinstance(iss, str) or not isinstance(sub, str):
            raise InvalidClientError("client assertion needs 'iss' and 'sub' (RFC 7523 §3 items 1-2)")
        if iss != sub:
            raise InvalidClientError("client assertion 'iss' and 'sub' must both be the client_id (RFC 7523 §3)")
        if params.get("client_id", sub) != sub:
            raise InvalidClientError("client_id does not match the client assertion's 'sub' (RFC 7521 §4.2)")
        client = self._clients.get(sub)
        if client is None or client.disabled:
            raise InvalidClientError("unknown or disabled client")
        return client


def _parse(assertion: str) -> jws.CompactJws:
    try:
        parsed = jws.parse_compact(assertion)
    except (JoseError, ValueError):
        raise InvalidClientError("client assertion is not a compact JWS (RFC 7515 §7.1)") from None
    unexpected = set(parsed.header) - HEADER_MEMBERS
    if unexpected:
        raise InvalidClientError("client assertion header may hold only 'alg', 'kid' and 'typ'")
    typ = parsed.header.get("typ")
    if typ is not None and (not isinstance(typ, str) or _media_type(typ) not in ACCEPTED_TYP):
        raise InvalidClientError("client assertion 'typ' must be absent, 'JWT' or 'client-authentication+jwt'")
    return parsed


def _media_type(typ: str) -> str:
    """RFC 7515 §4.1.9: a ``typ`` without ``/`` is treated as ``application/`` + it; media types compare
    case-insensitively (RFC 2045 §5.1)."""
    typ = typ.lower()
    return typ if "/" in typ else f"application/{typ}"


_CLIENT_KEYS = PublicKeyCache()  # each registered key imported once, not per assertion


def _select_key(keys: Sequence[Mapping[str, Any]], kid: object, alg: object) -> Mapping[str, Any]:
    """The JWK ``kid`` names (RFC 7515 §4.1.4), or the only key when the header has no ``kid``."""
    if kid is not None and not isinstance(kid, str):
        raise InvalidClientError("client assertion 'kid' must be a string")
    candidates = [key for key in keys if kid is None or key.get("kid") == kid]
    if len(candidates) != 1:
        raise InvalidClientError("client assertion 'kid' names none of the client's keys (or is ambiguous)")
    key = candidates[0]
    if key.get("alg", alg) != alg or key.get("use", "sig") != "sig":
        raise InvalidClientError("the client's key is registered for another algorithm or use")
    return key
