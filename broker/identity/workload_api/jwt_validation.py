"""JWT-SVID validation for the Workload API's ``ValidateJWTSVID`` (SPIFFE Workload API §6.2.3).

The rules are those of the JWT-SVID standard:

* §2: the JOSE header carries only ``alg``, ``kid`` and ``typ``; ``alg`` is one of RS/ES/PS 256/384/512 (never
  ``none`` or an HMAC); ``typ``, if present, is ``JWT`` or ``JOSE``;
* §3: ``sub`` is a SPIFFE ID, ``aud`` is present, ``exp`` is present;
* §4: the signature verifies with the key named by ``kid`` in the JWT bundle of the *subject's* trust domain
  (SPIFFE Workload API §6.3: no bundle for that trust domain means the token is untrusted), the validator's
  audience is among ``aud``, and the token has not expired.

Error messages name the rule, never the token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from broker.identity.bundle import JwtBundle
from broker.identity.errors import InvalidSpiffeIdError, JwtSvidError
from broker.identity.spiffeid import SpiffeId, TrustDomain

__all__ = ["ALGORITHMS", "validate_token"]

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")
_HEADER_PARAMETERS = frozenset({"alg", "kid", "typ"})


def validate_token(
    token: str, *, audience: str, bundles: Mapping[TrustDomain, JwtBundle], now: float | None = None
) -> tuple[SpiffeId, dict[str, Any]]:
    """Validate a JWT-SVID for ``audience``; return its SPIFFE ID and claims or raise :class:`JwtSvidError`."""
    header, unverified = _split(token)
    alg, kid = _check_header(header)
    subject = _subject(unverified)
    bundle = bundles.get(subject.trust_domain)
    if bundle is None:
        raise JwtSvidError(f"no JWT bundle for trust domain {subject.trust_domain}")
    authority = bundle.find(kid)
    if authority is None:
        raise JwtSvidError("the token's key ID is not in the trust domain's JWT bundle")
    try:
        key = JWKRegistry.import_key(dict(authority.jwk))
        claims = dict(jwt.decode(token, key, algorithms=[alg]).claims)
    except (JoseError, ValueError, TypeError):
        raise JwtSvidError("the token's signature does not verify") from None
    _check_claims(claims, audience=audience, now=time.time() if now is None else now)
    return subject, claims


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        payload = json.loads(compact.payload)
    except (JoseError, ValueError, TypeError):
        raise JwtSvidError("the token is not a JWS in compact serialization") from None
    if not isinstance(payload, dict):
        raise JwtSvidError("the token's payload is not a JSON object")
    return dict(compact.protected), payload


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    if set(header) - _HEADER_PARAMETERS:
        raise JwtSvidError("the JOSE header has parameters other than alg, kid and typ (JWT-SVID §2)")
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if alg not in ALGORITHMS:
        raise JwtSvidError("unsupported signature algorithm (JWT-SVID §2.1)")
    if typ is not None and typ not in ("JWT", "JOSE"):
        raise JwtSvidError("typ must be JWT or JOSE (JWT-SVID §2.3)")
    if not isinstance(kid, str) or not kid:
        raise JwtSvidError("the token has no key ID (JWT-SVID §2.2)")
    return str(alg), kid


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise JwtSvidError("the token has no subject (JWT-SVID §3.1)")
    try:
        return SpiffeId.parse(sub)
    except InvalidSpiffeIdError:
        raise JwtSvidError("the token's subject is not a SPIFFE ID (JWT-SVID §3.1)") from None


def _check_claims(claims: Mapping[str, Any], *, audience: str, now: float) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise JwtSvidError("the token has no audience (JWT-SVID §3.2)")
    if audience not in audiences:
        raise JwtSvidError("the token is not for this audience (JWT-SVID §3.2)")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise JwtSvidError("the token has no expiration time (JWT-SVID §3.3)")
    if now >= exp:
        raise JwtSvidError("the token has expired (JWT-SVID §3.3)")
    nbf = claims.get("nbf")
    if nbf is not None and (isinstance(nbf, bool) or not isinstance(nbf, int | float) or now < nbf):
        raise JwtSvidError("the token is not valid yet")
