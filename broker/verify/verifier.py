"""Checking the broker's access tokens at a resource server, including their binding (certificate or DPoP key).

A token is accepted only if every rule holds; each failure is :class:`~broker.errors.InvalidTokenError` (401,
``WWW-Authenticate: Bearer error="invalid_token"``, RFC 6750 §3.1) with a description that never quotes the token:

* compact JWS (RFC 7515 §7.1); no ``crit`` header (RFC 7515 §4.1.11: we understand no extensions);
* ``alg`` from the allowlist only (default ES256; never ``none`` or HMAC, RFC 8725 §3.1), ``kid`` naming a key of
  the issuer's JWKS, whose own ``alg`` (if declared) agrees; the signature verifies;
* ``typ`` is ``at+jwt`` or ``application/at+jwt`` (RFC 9068 §2.1, §4);
* ``iss`` equals the configured issuer, ``aud`` contains this resource server's audience (RFC 9068 §4);
* ``exp`` and ``iat`` are present; ``exp``, ``nbf`` and ``iat`` hold within ``leeway`` seconds (RFC 7519 §4.1);
* ``sub`` is a SPIFFE ID;
* the binding, by the scheme the token came with:

  - ``Bearer`` (:meth:`AccessTokenVerifier.verify`): ``cnf.x5t#S256`` equals the SHA-256 thumbprint of the client
    certificate on *this* TLS connection (RFC 8705 §3: a missing ``cnf``, a missing certificate or a different
    certificate is ``invalid_token``); a DPoP-bound token (``cnf.jkt``) is refused here (RFC 9449 §7.2);
  - ``DPoP`` (:meth:`AccessTokenVerifier.verify_dpop`, only with a :class:`~broker.verify.dpop.DpopPolicy`):
    first the request's one ``DPoP`` proof passes :func:`broker.oauth.dpop.check_proof` (RFC 9449 §4.3, with
    ``ath`` for this token), then the token is checked as above with ``cnf.jkt`` equal to the proof key's
    thumbprint (§4.3 item 12, §6.1; a certificate-bound token is refused on this scheme), last the proof's
    ``jti`` is recorded in the replay cache (§11.1). Refusals carry ``WWW-Authenticate: DPoP`` (§7.1);
* with ``revocations`` (a :class:`~broker.verify.feed.RevocationFeedFollower`), last: the token's ``jti``, its
  ``kid``, and its subject (quarantined, or cut off at the time it was issued) are not on the revocation feed,
  else ``invalid_token`` "access token revoked", nothing more. A stale feed with ``on_stale = "fail-closed"``
  raises :class:`~broker.verify.feed.RevocationFeedStaleError` instead (503, see :mod:`broker.verify.feed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.errors import DpopProofError, InvalidTokenError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId
from broker.jose import jws
from broker.jose.errors import Base64urlError, JoseError, JsonObjectError, MalformedJwsError, TokenTooLongError
from broker.jose.jwt import finite_number
from broker.jose.x5t import certificate_thumbprint
from broker.oauth.binding import Jkt, X5tS256
from broker.oauth.dpop import DpopProof, KeyBindingMismatchError, check_proof, check_proof_unused, single_proof
from broker.oauth.replay import MemoryReplayCache, ReplayCache
from broker.verify.dpop import DpopPolicy, dpop_refusal
from broker.verify.jwks import JwksProvider

__all__ = ["ACCESS_TOKEN_TYPES", "AccessTokenVerifier", "RevocationCheck", "VerifiedToken", "certificate_thumbprint"]

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified access token says: who (``spiffe_id``), what (``scopes``), and until when."""

    spiffe_id: SpiffeId
    scopes: frozenset[str]
    audience: tuple[str, ...]
    expires_at: float
    client_id: str | None = None
    jti: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def scope(self) -> str:
        """The granted scopes as an RFC 6749 §3.3 string (sorted)."""
        return " ".join(sorted(self.scopes))


class RevocationCheck(Protocol):
    """Why a verified token is cut off (any reason: the verifier says only "revoked"), or None."""

    def refusal(self, *, jti: str | None, kid: str | None, subject: str, issued_at: float) -> str | None: ...


def _malformed(exc: MalformedJwsError) -> str:
    """The verifier's words for a token that is not a compact JWS (they appear in ``error_description``)."""
    if isinstance(exc, TokenTooLongError):
        return "token too long"
    if isinstance(exc, JsonObjectError):
        return f"{exc.part} is not a JSON object in UTF-8 without duplicate members"
    if isinstance(exc, Base64urlError):
        return "bad base64url"
    return "not a compact JWS"


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        return finite_number(value)
    except ValueError:
        raise InvalidTokenError(f"claim {name!r} is not a finite number (RFC 7519 §2)") from None


class AccessTokenVerifier:
    """Verifies the broker's RFC 9068 access tokens for one resource server (``audience``)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JwksProvider,
        leeway: float = 30.0,
        algorithms: Iterable[str] = ("ES256",),
        clock: Callable[[], float] = time.time,
        revocations: RevocationCheck | None = None,
        dpop: DpopPolicy | None = None,
    ) -> None:
        allowed = frozenset(algorithms)
        if not allowed or not allowed <= jws.ES_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(jws.ES_ALGORITHMS)}")
        self.issuer = issuer
        self.audience = audience
        self._jwks = jwks
        self._leeway = leeway
        self._algorithms = allowed
        self._clock = clock
        self._revocations = revocations
        self.dpop = dpop
        self._replay: ReplayCache | None = None
        if dpop is not None:
            self._replay = dpop.replay_cache if dpop.replay_cache is not None else MemoryReplayCache()

    async def verify(self, token: str, client_cert_der: bytes | None) -> VerifiedToken:
        """Verify ``token`` sent as ``Bearer`` on a connection whose client certificate is ``client_cert_der``."""
        return await self._verify(token, lambda claims: self._check_binding(claims, client_cert_der))

    async def verify_dpop(self, token: str, *, proofs: Sequence[str], method: str, uri: str) -> VerifiedToken:
        """Verify ``token`` sent as ``Authorization: DPoP`` with the request's ``DPoP`` header values ``proofs``,
        for a request with ``method`` to ``uri`` (RFC 9449 §7; see the module docstring)."""
        policy, replay = self.dpop, self._replay
        if policy is None or replay is None:
            raise InvalidTokenError("DPoP-bound tokens are not accepted here (no DpopPolicy): use Bearer")
        try:
            proof = self._check_proof(policy, single_proof(proofs), token, method=method, uri=uri)
            verified = await self._verify(token, lambda claims: self._check_dpop_binding(claims, proof))
            await check_proof_unused(proof, replay, now=self._clock(), window=policy.window)
        except (DpopProofError, InvalidTokenError) as exc:
            raise dpop_refusal(exc, policy) from None
        return verified

    def _check_proof(self, policy: DpopPolicy, proof: str, token: str, *, method: str, uri: str) -> DpopProof:
        return check_proof(
            proof,
            htm=method,
            htu=uri,
            now=self._clock(),
            leeway=policy.leeway,
            max_age=policy.max_age,
            algorithms=policy.allowed,
            access_token=token,
            nonce=policy.nonces,
        )

    async def _verify(self, token: str, check_binding: Callable[[Mapping[str, Any]], None]) -> VerifiedToken:
        try:  # non-canonical base64url spellings are accepted here, as they always were
            compact = jws.parse_compact(token, canonical=False)
        except MalformedJwsError as exc:
            raise InvalidTokenError(f"malformed access token ({_malformed(exc)})") from None
        alg, kid = self._check_header(compact.header)
        key = self._jwks.cached_key(kid) or await self._jwks.get_key(kid)
        if key is None:
            raise InvalidTokenError("access token signed with an unknown key")
        if key.alg is not None and key.alg != alg:
            raise InvalidTokenError("access token algorithm does not match its key")
        try:
            jws.verify_signature(alg, key.public_key, compact.signing_input, compact.signature)
        except JoseError:
            raise InvalidTokenError("access token signature is invalid") from None
        verified = self._check_claims(compact, check_binding)
        if self._revocations is not None:
            iat = verified.claims["iat"]  # present and a finite number: _check_times
            subject = str(verified.spiffe_id)
            if self._revocations.refusal(jti=verified.jti, kid=kid, subject=subject, issued_at=float(iat)):
                raise InvalidTokenError("access token revoked")
        return verified

    def _check_header(self, header: Mapping[str, Any]) -> tuple[str, str]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidTokenError("access token algorithm is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("not an access token (typ must be at+jwt, RFC 9068 §4)")
        if "crit" in header:
            raise InvalidTokenError("access token has critical header extensions we do not understand")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("access token has no key ID")
        return alg, kid

    def _check_claims(
        self, compact: jws.CompactJws, check_binding: Callable[[Mapping[str, Any]], None]
    ) -> VerifiedToken:
        claims = compact.payload
        if claims.get("iss") != self.issuer:
            raise InvalidTokenError("access token is from another issuer")
        audience = claims.get("aud")
        audiences = (audience,) if isinstance(audience, str) else audience
        if not isinstance(audiences, list | tuple) or self.audience not in audiences:
            raise InvalidTokenError("access token is not meant for this resource server")
        expires_at = self._check_times(claims)
        spiffe_id = self._subject(claims)
        check_binding(claims)
        scope = claims.get("scope")
        client_id, jti = claims.get("client_id"), claims.get("jti")
        if not isinstance(client_id, str) or not client_id or not isinstance(jti, str) or not jti:
            raise InvalidTokenError("access token lacks client_id or jti (RFC 9068 §2.2)")
        if scope is not None and not isinstance(scope, str):
            raise InvalidTokenError("access token scope is not a string (RFC 9068 §2.2.3)")
        return VerifiedToken(
            spiffe_id=spiffe_id,
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            audience=tuple(str(a) for a in audiences),
            expires_at=expires_at,
            client_id=client_id,
            jti=jti,
            claims=claims,
        )

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        now, leeway = self._clock(), self._leeway
        exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
        if exp is None or iat is None:
            raise InvalidTokenError("access token lacks exp or iat (RFC 9068 §2.2)")
        if now >= exp + leeway:
            raise InvalidTokenError("access token has expired")
        if nbf is not None and nbf > now + leeway:
            raise InvalidTokenError("access token is not valid yet")
        if iat > now + leeway:
            raise InvalidTokenError("access token was issued in the future")
        return exp

    @staticmethod
    def _subject(claims: Mapping[str, Any]) -> SpiffeId:
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise InvalidTokenError("access token has no subject")
        try:
            return SpiffeId.parse(sub)
        except InvalidSpiffeIdError:
            raise InvalidTokenError("access token subject is not a SPIFFE ID") from None

    @staticmethod
    def _check_binding(claims: Mapping[str, Any], client_cert_der: bytes | None) -> None:
        """RFC 8705 §3: the presented certificate must be the one the token is bound to."""
        if Jkt.bound_in(claims) is not None:
            raise InvalidTokenError("access token is not bound to a certificate: it is DPoP-bound (RFC 9449 §7.2)")
        bound = X5tS256.bound_in(claims)
        if not isinstance(bound, str) or not bound:
            raise InvalidTokenError("access token is not bound to a certificate (no cnf.x5t#S256)")
        if not client_cert_der:
            raise InvalidTokenError("certificate-bound token presented without a client certificate (RFC 8705 §3)")
        if not X5tS256.of_der(client_cert_der).matches(bound):
            raise InvalidTokenError("access token is bound to a different client certificate (RFC 8705 §3)")

    @staticmethod
    def _check_dpop_binding(claims: Mapping[str, Any], proof: DpopProof) -> None:
        """RFC 9449 §4.3 item 12, §6.1: the token is bound to the proof's key, and to nothing else."""
        bound = Jkt.bound_in(claims)
        if not isinstance(bound, str) or not bound:
            raise InvalidTokenError("access token is not DPoP-bound (no cnf.jkt): use the Bearer scheme")
        if X5tS256.bound_in(claims) is not None:
            raise InvalidTokenError("access token is also certificate-bound (RFC 8705 §3): use the Bearer scheme")
        if not Jkt(proof.jkt).matches(bound):
            raise KeyBindingMismatchError("access token is bound to another DPoP key (RFC 9449 §6.1)")
