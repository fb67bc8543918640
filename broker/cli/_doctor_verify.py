"""``spiffe-broker doctor``, checks 5 and 6: what a resource server will make of the token, and the clocks.

5. ``jwks``: the ``jwks_uri`` of the metadata, fetched over mTLS as :mod:`broker.verify` fetches it
   (:class:`~broker.verify.jwks.HttpsJsonFetcher`, :func:`~broker.verify.jwks.parse_jwks`), holds a usable
   signing key; with a token from check 4, its ``kid`` is there, its ``alg`` fits that key, its signature
   verifies with it (RFC 7515 §5.2) and its ``iss`` is the issuer. Time claims are check 6's.
6. ``time-sync``: this node's clock against each clock the earlier checks read: the token service's (the
   ``iat`` of the token it just issued), its host's (the HTTP ``Date`` of the metadata response) and the
   Workload API issuer's (the ``iat`` of the fresh JWT-SVID of check 2: the SPIRE server's clock). Every reading
   is whole seconds, compared at the midpoint of its request; beyond ``--max-skew`` the check fails naming the
   clock, by how much and which way; when every other clock disagrees with this node the same way, it names
   this node's.
"""

from __future__ import annotations

from broker.cli._doctor_node import ClockSample, Node
from broker.cli._doctor_report import CheckFailed, Outcome
from broker.jose import jws
from broker.jose.errors import JoseError
from broker.verify.jwks import HttpsJsonFetcher, JwksFetchError, VerificationKey, parse_jwks

__all__ = ["JWKS", "TIME_SYNC", "check_jwks", "check_time_sync", "time_sync_failure"]

JWKS = "jwks"
TIME_SYNC = "time-sync"
_KEYRING_FIX = (
    "every replica behind the issuer must share one store (one keyring), and a key is published before it signs "
    "([keyring] jwks_max_age); compare `spiffe-broker keys list` with the JWKS"
)
_TIME_FIX = (
    "synchronise {where} with NTP (chrony: `chronyc tracking`; systemd: `timedatectl show-timesync`); tokens "
    "and JWT-SVIDs are refused beyond the leeway (docs/operations.md, 'Clocks')"
)


async def _keys(node: Node, jwks_uri: str) -> dict[str, VerificationKey]:
    server_id, _ = node.need_server()
    fetcher = HttpsJsonFetcher(source=node.need_source(), server_id=server_id, timeout=node.inputs.timeout)
    try:
        keys = parse_jwks(await fetcher(jwks_uri))
    except JwksFetchError as exc:
        raise CheckFailed(
            f"a verifier cannot fetch the signing keys: {exc.description}",
            "the token service must serve its jwks_uri over mTLS; read its log",
        ) from None
    finally:
        await fetcher.aclose()
    if not keys:
        raise CheckFailed(f"the JWKS at {jwks_uri} holds no usable signing key (EC, with a kid)", _KEYRING_FIX)
    return keys


def _check_token(node: Node, keys: dict[str, VerificationKey], jwks_uri: str) -> str:
    """The token's ``kid``, once its key is found, fits, verifies the signature, and ``iss`` is the issuer."""
    assert node.token is not None
    try:
        compact = jws.read_unverified(node.token[0].access_token, canonical=False)
    except JoseError as exc:
        raise CheckFailed(f"the token is not a JWS: {exc}", "is the token service a spiffe-broker?") from None
    kid, alg = compact.header.get("kid"), compact.header.get("alg")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        known = ", ".join(sorted(keys))
        raise CheckFailed(f"the token's kid {kid!r} is not in the JWKS at {jwks_uri} (it has {known})", _KEYRING_FIX)
    try:
        if not isinstance(alg, str) or alg not in jws.ES_ALGORITHMS or (key.alg is not None and key.alg != alg):
            raise CheckFailed(f"the token's alg {alg!r} does not fit key {kid} of the JWKS", _KEYRING_FIX)
        jws.verify(compact, alg, key.public_key)
    except JoseError:
        raise CheckFailed(f"the token's signature does not verify with key {kid} of the JWKS", _KEYRING_FIX) from None
    if compact.payload.get("iss") != node.inputs.issuer:
        raise CheckFailed(
            f"the token's iss {compact.payload.get('iss')!r} is not the issuer {node.inputs.issuer}",
            "set the token service's server.issuer to the URL its clients and verifiers use",
        )
    return key.kid


async def check_jwks(node: Node) -> Outcome:
    _, metadata = node.need_server()
    jwks_uri = metadata.jwks_uri
    assert jwks_uri is not None  # the token-service check requires it
    keys = await _keys(node, jwks_uri)
    if node.token is None:
        return Outcome.passed(
            JWKS,
            f"{jwks_uri} serves {len(keys)} signing key(s): {', '.join(sorted(keys))}",
            jwks_uri=jwks_uri,
            kids=sorted(keys),
        )
    kid = _check_token(node, keys, jwks_uri)
    return Outcome.passed(
        JWKS,
        f"the token's kid {kid} is in {jwks_uri} and its signature verifies",
        jwks_uri=jwks_uri,
        kid=kid,
        kids=sorted(keys),
    )


# -- check 6 ---------------------------------------------------------------------------------------------------


def _workload_api_sample(node: Node) -> list[ClockSample]:
    if node.clock_svid is None:
        return []
    jwt, when = node.clock_svid
    iat = jwt.claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        return []
    return [ClockSample("the Workload API's issuer (SPIRE server)", "the iat of a fresh JWT-SVID", float(iat), when)]


def _way(offset: float) -> str:
    return f"{abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'}"


def time_sync_failure(far: list[ClockSample], samples: list[ClockSample], limit: float) -> CheckFailed:
    readings = {s.clock: round(s.offset, 1) for s in samples}
    same_way = len({s.clock for s in far}) == len(samples) > 1 and len({s.offset > 0 for s in far}) == 1
    if same_way:
        offset = sum(s.offset for s in far) / len(far)
        return CheckFailed(
            f"this node's clock is about {_way(-offset)} the others "
            f"({', '.join(f'{s.clock}: {_way(s.offset)} it, by {s.evidence}' for s in far)}), beyond {limit:g} s",
            _TIME_FIX.format(where="this node"),
            offsets=readings,
        )
    worst = max(far, key=lambda s: abs(s.offset))
    return CheckFailed(
        f"{worst.clock}'s clock is {_way(worst.offset)} this node's (by {worst.evidence}), beyond {limit:g} s",
        _TIME_FIX.format(where=f"{worst.clock}'s host (or this node)"),
        clock=worst.clock,
        offset=round(worst.offset, 3),
        offsets=readings,
    )


async def check_time_sync(node: Node) -> Outcome:
    samples = [*node.clocks, *_workload_api_sample(node)]
    if not samples:
        return Outcome.skipped(TIME_SYNC, "no other clock was read")
    limit = node.inputs.max_skew
    far = [s for s in samples if abs(s.offset) > limit]
    if far:
        raise time_sync_failure(far, samples, limit)
    shown = ", ".join(f"{s.clock} {s.offset:+.1f} s" for s in samples)
    return Outcome.passed(
        TIME_SYNC,
        f"within {limit:g} s of this node's clock: {shown}",
        offsets={s.clock: round(s.offset, 3) for s in samples},
    )
