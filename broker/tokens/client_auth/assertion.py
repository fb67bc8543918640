"""The claim rules every client assertion obeys, JWT-SVID or registered client's JWT (RFC 7523 §3, as narrowed by
draft-ietf-oauth-rfc7523bis §4 and draft-ietf-oauth-spiffe-client-auth §3.1).

* ``aud`` (RFC 7523bis §4): the authorization server's issuer identifier as the SOLE value (a string, or an array
  of exactly that one string), compared as a simple string (RFC 3986 §6.2.1). The token endpoint URL is refused:
  an assertion minted for one server's token endpoint must not be replayable at another that shares keys.
* ``exp`` (RFC 7523 §3 item 4): required; ``now < exp + leeway``.
* Lifetime: ``exp - iat`` (or ``exp - now`` without ``iat``) at most the client's maximum (default 60 s): a short
  lifetime keeps the replay cache small and a stolen assertion nearly useless. Without ``iat`` the leeway is
  granted too (``exp - now - leeway``): a client clock running ahead by up to the leeway makes ``exp`` look later.
* ``nbf`` (item 5): if present, ``nbf <= now + leeway``. ``iat`` (item 6): if present, not more than ``leeway`` in
  the future (a clock ahead, or a forged lifetime).
* ``jti`` (item 7): a string of at most :data:`~broker.oauth.replay.MAX_JTI_LENGTH` characters when present;
  whether it is required and single-use is the assertion type's rule.

Every refusal is ``invalid_client`` (RFC 7521 §4.2.1) naming the rule, never the assertion. The replay cache is
asked last, after the signature and every claim checked, so only genuine assertions take a place in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.errors import InvalidClientError
from broker.jose.jwt import finite_number
from broker.oauth.replay import MAX_JTI_LENGTH, ReplayCache

__all__ = ["AssertionTimes", "check_audience", "check_times", "jti_of", "record_use"]

MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: later arithmetic on a NumericDate cannot overflow


@dataclass(frozen=True, slots=True)
class AssertionTimes:
    """The checked time claims of an assertion (seconds since the epoch)."""

    exp: float
    iat: float | None


def check_audience(claims: Mapping[str, Any], issuer: str) -> None:
    """RFC 7523bis §4: ``aud`` holds the issuer identifier as its sole value."""
    aud = claims.get("aud")
    if aud is None:
        raise InvalidClientError("client assertion has no 'aud' (RFC 7523 §3 item 3)")
    values = aud if isinstance(aud, list) else [aud]
    if values != [issuer]:
        raise InvalidClientError(
            "client assertion 'aud' must be this server's issuer identifier as its sole value (RFC 7523bis §4)"
        )


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        number = finite_number(value)
    except ValueError:
        raise InvalidClientError(f"client assertion '{name}' is not a NumericDate (RFC 7519 §2)") from None
    if not 0 <= number <= MAX_NUMERIC_DATE:
        raise InvalidClientError(f"client assertion '{name}' is out of range")
    return number


def check_times(claims: Mapping[str, Any], *, now: float, leeway: float, max_lifetime: float) -> AssertionTimes:
    """RFC 7523 §3 items 4-6 and the lifetime cap (see the module docstring)."""
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise InvalidClientError("client assertion has no 'exp' (RFC 7523 §3 item 4)")
    if now >= exp + leeway:
        raise InvalidClientError("client assertion has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise InvalidClientError("client assertion is not yet valid ('nbf')")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise InvalidClientError("client assertion was issued in the future ('iat'): check the client's clock")
    lifetime = exp - iat if iat is not None else exp - now - leeway
    if lifetime > max_lifetime:
        raise InvalidClientError(f"client assertion lifetime is longer than the {max_lifetime:g} s allowed")
    return AssertionTimes(exp=exp, iat=iat)


def jti_of(claims: Mapping[str, Any]) -> str | None:
    """The ``jti`` (RFC 7519 §4.1.7) if present: a non-empty string of bounded length."""
    jti = claims.get("jti")
    if jti is None:
        return None
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidClientError(f"client assertion 'jti' must be a string of 1-{MAX_JTI_LENGTH} characters")
    return jti


async def record_use(cache: ReplayCache, key: str, *, now: float, exp: float, leeway: float) -> bool:
    """Record one use of an assertion until ``exp + leeway`` (past that its times refuse it anyway); whether this
    is its first use. :class:`~broker.oauth.replay.ReplayCacheUnavailable` propagates: never accept unrecorded."""
    until = datetime.fromtimestamp(max(exp + leeway, now + 1), UTC)
    return await cache.add(key, now=datetime.fromtimestamp(now, UTC), expires_at=until)
