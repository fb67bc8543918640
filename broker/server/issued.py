"""Checking a token presented back to the broker that issued it (``/revoke``, ``/introspect``), with the claim checks
of :class:`broker.verify.AccessTokenVerifier` and the keyring's published keys, not a second copy of either.

* :class:`KeyringJwks`: the keyring's published keys (``next``, ``active``, ``retiring``; never ``retired`` or
  ``revoked``) as the verifier's :class:`~broker.verify.JwksProvider`, read from the keyring's in-memory snapshot;
* :class:`IssuedTokenCheck`: the :class:`~broker.tokens.presented.TokenCheck` of both endpoints. It runs the
  verifier's checks (compact JWS, ``alg``, ``typ: at+jwt``, no ``crit``, a ``kid`` of this broker's keyring, the
  signature, ``iss``, ``exp``/``nbf``/``iat``, ``sub`` a SPIFFE ID, ``client_id`` and ``jti`` present) with two
  differences that belong to the issuer's side:

  - the audience is not this server's: it is whatever the token names (the verifier is built per call for the
    token's own ``aud``, which still makes it check that ``aud`` is a string or a list of them);
  - the certificate binding (RFC 8705 §3) is *not* checked against the caller: the caller is the token's holder
    revoking it, or a resource server asking about it, not a client presenting it for access. The token must
    still carry a ``cnf.x5t#S256`` or a ``cnf.jkt`` (a DPoP-bound token, RFC 9449 §6.1); introspection returns it
    so that the resource server checks it (RFC 8705 §3.2, RFC 9449 §6.2).

  The issuer's clock is the one that counts here: a token is expired from its ``exp`` on (RFC 7519 §4.1.4), with
  no leeway; :data:`REPLICA_SKEW` only lets a replica whose clock runs a little ahead have issued ``iat``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from broker.errors import InvalidTokenError
from broker.jose import jws
from broker.jose.errors import MalformedJwsError
from broker.oauth.binding import CNF_CLAIM, X5tS256
from broker.tokens.keys import ALGORITHM, KeyStore
from broker.tokens.presented import CheckedToken
from broker.verify.jwks import VerificationKey
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = ["REPLICA_SKEW", "IssuedTokenCheck", "KeyringJwks"]

REPLICA_SKEW = 5.0  # seconds another replica's clock may run ahead (iat, nbf)


class KeyringJwks:
    """The keyring's published public keys by ``kid``; rebuilt when the published set changes (a reload)."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys
        self._seen: tuple[str, ...] = ()
        self._by_kid: dict[str, VerificationKey] = {}

    def cached_key(self, kid: str) -> VerificationKey | None:
        published = self._keys.published_keys()
        kids = tuple(key.kid for key in published)
        if kids != self._seen:
            self._by_kid = {k.kid: VerificationKey(k.kid, k.private_key.public_key(), ALGORITHM) for k in published}
            self._seen = kids
        return self._by_kid.get(kid)

    async def get_key(self, kid: str) -> VerificationKey | None:
        return self.cached_key(kid)


class _IssuerSideVerifier(AccessTokenVerifier):
    """The verifier without the holder's certificate: see the module docstring."""

    @staticmethod
    def _check_binding(claims: Mapping[str, Any], client_cert_der: bytes | None) -> None:
        cnf = claims.get(CNF_CLAIM)
        bound = X5tS256.bound_in(claims) if not (isinstance(cnf, dict) and "jkt" in cnf) else cnf["jkt"]
        if not isinstance(bound, str) or not bound:
            raise InvalidTokenError("access token is not sender-constrained (no cnf.x5t#S256 or cnf.jkt)")


class IssuedTokenCheck:
    """:class:`~broker.tokens.presented.TokenCheck` for tokens of ``issuer``, signed by ``keys``."""

    def __init__(self, *, issuer: str, keys: KeyStore, clock: Callable[[], float] = time.time) -> None:
        self._issuer = issuer
        self._jwks = KeyringJwks(keys)
        self._clock = clock

    async def check(self, token: str) -> CheckedToken | None:
        try:
            peeked = jws.read_unverified(token, canonical=False)  # the token's own audience and kid, checked below
        except MalformedJwsError:
            return None
        audience, kid = _first_audience(peeked.payload.get("aud")), peeked.header.get("kid")
        if audience is None or not isinstance(kid, str):
            return None
        verifier = _IssuerSideVerifier(
            issuer=self._issuer, audience=audience, jwks=self._jwks, leeway=REPLICA_SKEW, clock=self._clock
        )
        try:
            verified = await verifier.verify(token, None)
        except InvalidTokenError:
            return None
        if verified.expires_at <= self._clock():
            return None  # expired at the issuer, whatever leeway a resource server allows
        return _checked(verified, kid)


def _first_audience(aud: object) -> str | None:
    if isinstance(aud, str):
        return aud
    if isinstance(aud, list) and aud and isinstance(aud[0], str):
        return aud[0]
    return None


def _checked(verified: VerifiedToken, kid: str) -> CheckedToken:
    claims = verified.claims
    return CheckedToken(
        jti=str(verified.jti),
        kid=kid,
        subject=str(verified.spiffe_id),
        audiences=verified.audience,
        issued_at=datetime.fromtimestamp(float(claims["iat"]), UTC),
        expires_at=datetime.fromtimestamp(verified.expires_at, UTC),
        claims=claims,
    )
