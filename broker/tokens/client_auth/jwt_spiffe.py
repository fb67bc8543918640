"""A JWT-SVID as the client's credential (draft-ietf-oauth-spiffe-client-auth-02 §3.1: ``client_assertion_type=
urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``, advertised as ``spiffe_jwt``, §4).

Checks, in the order the code runs them (every refusal ``invalid_client``, RFC 7521 §4.2.1):

1. the assertion is a valid JWT-SVID (:func:`broker.identity.jwtsvid.validate_jwt_svid`: JWT-SVID §2-§3, the key
   from the JWT bundle of ``sub``'s trust domain and no other, §3.1 item 4 of the draft; memoised per token and
   bundle like subject tokens);
2. ``aud`` is this server's issuer identifier as its sole value (draft §3.1 item 3, RFC 7523bis §4);
3. times: ``exp``, ``nbf``, ``iat`` with the leeway, and the lifetime cap of the policy rules for ``sub``
   (:meth:`broker.tokens.policy.Policy.assertion_rules`, default 60 s);
4. a ``client_id`` form parameter, if sent, is the SPIFFE ID in ``sub`` (draft §3.1 item 5);
5. a client certificate on the same request names the same SPIFFE ID (RFC 6749 §2.3: one client per request);
6. replay, per the policy's ``jwt_svid_reuse`` for ``sub`` (docs/threat-model.md, "JWT-SVIDs as client
   assertions"). SPIRE's agent hands out the same JWT-SVID, ``jti`` included, until half its lifetime, so:

   * ``single-use``: a ``jti`` is required and must be fresh (a JWT-SVID without one is refused);
   * ``sender-bound``: the first use is recorded like any other; a repeat is accepted only over mutual TLS from
     the same SPIFFE ID (the repeat then proves possession of the X.509-SVID key, so a copied JWT-SVID alone is
     still single-use). Without a ``jti`` the use is recorded under ``sub``, ``iat`` and ``exp``: never the token's
     bytes, which ECDSA malleability lets an attacker vary.

7. clock drift (:mod:`broker.tokens.drift`): ``now - iat`` of the FIRST use only. A sender-bound repeat carries
   the same ``iat`` later (SPIRE reuses a JWT-SVID for half its lifetime), which would read as a clock running
   minutes behind.

The signature (step 1) is verified before anything is recorded (step 6), so a forged assertion cannot spend
another client's ``jti``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from broker.errors import InvalidClientError
from broker.identity.bundle import JwtBundleSet
from broker.identity.errors import IdentityError
from broker.identity.jwtsvid import ALLOWED_ALGORITHMS, validate_jwt_svid
from broker.identity.svid import JwtSvid
from broker.oauth.constants import ASSERTION_TYPE_JWT_SPIFFE
from broker.oauth.replay import ReplayCache, ReplayKind, replay_key
from broker.tokens.client_auth.assertion import check_audience, check_times, jti_of, record_use
from broker.tokens.drift import DriftSource, DriftTracker
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.policy import SENDER_BOUND, SINGLE_USE, PolicyStore
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = ["AUTH_SPIFFE_JWT", "JwtSpiffeAuth"]

AUTH_SPIFFE_JWT = "spiffe_jwt"  # draft-ietf-oauth-spiffe-client-auth-02 §4
MAX_ASSERTION_CHARS = 16 * 1024


class JwtSpiffeAuth:
    """``jwt-spiffe`` client assertions against ``jwt_bundles``, for audience ``issuer``."""

    name = AUTH_SPIFFE_JWT
    signing_algorithms = tuple(sorted(ALLOWED_ALGORITHMS))
    assertion_type = ASSERTION_TYPE_JWT_SPIFFE

    def __init__(
        self,
        *,
        issuer: str,
        jwt_bundles: Callable[[], JwtBundleSet],
        policy_store: PolicyStore,
        replay: ReplayCache,
        drift: DriftTracker,
        memo: ValidatedSvidCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._jwt_bundles = jwt_bundles
        self._policy = policy_store
        self._replay = replay
        self._drift = drift
        self._memo = memo if memo is not None else ValidatedSvidCache()  # an empty memo is falsy (``__len__``)
        self._clock = clock

    async def authenticate(
        self, assertion: str, params: Mapping[str, str], transport: AuthenticatedClient | None
    ) -> AuthenticatedClient:
        now, leeway = self._clock(), self._drift.leeway
        svid = self._validated(assertion, now, leeway)
        claims = svid.claims
        check_audience(claims, self._issuer)
        rules = self._policy.current().assertion_rules(svid.spiffe_id)
        times = check_times(claims, now=now, leeway=leeway, max_lifetime=rules.max_lifetime)
        if params.get("client_id", str(svid.spiffe_id)) != str(svid.spiffe_id):
            raise InvalidClientError("client_id does not match the JWT-SVID's SPIFFE ID (its 'sub')")
        same_sender = transport is not None and transport.spiffe_id == svid.spiffe_id
        if transport is not None and not same_sender:
            raise InvalidClientError("client assertion and client certificate name different SPIFFE IDs")
        jti = jti_of(claims)
        if jti is None and rules.reuse == SINGLE_USE:
            raise InvalidClientError("this SPIFFE ID's JWT-SVIDs must carry a 'jti' (policy: single-use)")
        use = jti if jti is not None else f"iat={claims.get('iat')};exp={claims.get('exp')}"
        key = replay_key(ReplayKind.JWT_SVID, str(svid.spiffe_id), use)
        fresh = await record_use(self._replay, key, now=now, exp=times.exp, leeway=leeway)
        if not fresh and not (rules.reuse == SENDER_BOUND and same_sender):
            raise InvalidClientError(_replayed(rules.reuse))
        if fresh and times.iat is not None:  # a repeat's iat says nothing new about the client's clock
            self._drift.record(str(svid.spiffe_id), DriftSource.JWT_SVID, now=now, iat=times.iat)
        leaf = transport.leaf if transport is not None else None
        return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=leaf, auth_method=self.name)

    def _validated(self, assertion: str, now: float, leeway: float) -> JwtSvid:
        if len(assertion) > MAX_ASSERTION_CHARS:
            raise InvalidClientError("client assertion is too large")
        bundles = self._jwt_bundles()
        key = ValidatedSvidCache.key(assertion, self._issuer)
        svid = self._memo.get(key, bundles, now=now, leeway=leeway)
        if svid is not None:
            return svid
        try:
            svid = validate_jwt_svid(assertion, audience=self._issuer, bundles=bundles, leeway=leeway, now=now)
        except IdentityError as exc:
            raise InvalidClientError(
                f"client assertion is not a valid JWT-SVID for this server ({exc.reason})"
            ) from None
        except ValueError:  # e.g. characters outside ASCII; never echo the assertion
            raise InvalidClientError("client assertion is not a valid JWT-SVID for this server") from None
        self._memo.put(key, svid, bundles)
        return svid


def _replayed(reuse: str) -> str:
    if reuse == SENDER_BOUND:
        return "JWT-SVID already used: a repeat is accepted only over mutual TLS from the same SPIFFE ID"
    return "JWT-SVID already used ('jti' replayed; policy: single-use)"
