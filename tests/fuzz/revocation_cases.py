"""Mutated ``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662) requests with a known verdict, and the judge of an
answer, for ``test_revoke_introspect_fuzz.py`` and ``bench/fuzz_revocation_endpoints.py``.

A case is an endpoint, a caller (see ``stateful_service_thread.CALLERS``, or no certificate) and a form around a
token: a fresh valid token of the owner or of another client (sometimes revoked first), or an invalid one (its
header, payload or signature mutated; signed by another issuer's key; ``iss`` of another issuer; expired; not yet
valid; ``alg: none``; ``typ`` not ``at+jwt``; garbage, huge or non-ASCII). Neutral mutations keep the request as it
is (those of :mod:`token_cases`, plus ``token_type_hint`` values and a ``client_id`` naming the caller);
invalidating ones each refuse it at a known stage. The verdict follows the order the service checks in
(:mod:`broker.server.token_status`, :mod:`broker.tokens.revoke`, :mod:`broker.tokens.introspection`)::

    stage        what                                               answer
    http         another method                                     405 invalid_request
    auth         no client certificate                              401 invalid_client
    allow-list   /introspect by a caller not on the list            403 access_denied
    form         query string, media type, coding, size, not UTF-8  400 invalid_request
    parameters   a repeated parameter                               400 invalid_request
    client_id    a client_id naming another client                  401 invalid_client
    token        no token                                           400 invalid_request
    then /revoke: an invalid or already revoked token: 200, nothing changes; a valid token of the caller, or any
    valid token when the caller is an admin: 200, one entry on the log; of another client: 400 invalid_grant.
    /introspect: anything but a valid live token the caller may know about: exactly {"active": false}; a valid
    one: the RFC 7662 §2.2 members, as the token carries them.

Broken framing is only "some 4xx"; ``chaos`` (1-3 byte edits of the head, from :mod:`token_cases`) only "never a
5xx". Whatever the case, the revocation log may change only by the case's own valid token. Every case carries the
canary (a header, a parameter, a token's ``kid`` or ``jti``, or malformed bytes).
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.events.revocations import LogEntry, TokenRevoked
from broker.tokens.keys import SigningKey
from tests.fuzz import token_cases as tc
from tests.fuzz.token_cases import FORM, Request

RFC6749_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                            "unsupported_grant_type", "invalid_scope"})  # fmt: skip
REVOKE_ERRORS = RFC6749_ERRORS | {"unsupported_token_type"}  # RFC 7009 §2.2.1
INTROSPECT_ERRORS = RFC6749_ERRORS | {"access_denied"}  # 403 for a caller off the allow-list
INTROSPECTION_MEMBERS = frozenset({"scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "cnf"})
REVOKERS = ("owner", "other", "admin", "rs", "outsider")
INTROSPECTORS = ("rs", "rs", "rs", "rs", "rs_narrow", "owner", "admin", "outsider")


@dataclass(frozen=True)
class Kit:
    """What the cases need from the running service: its issuer, fresh tokens, its signing key."""

    issuer: str
    callers: Mapping[str, str]  # name -> SPIFFE ID
    mint: Callable[[str], str]  # "owner" | "other" -> a fresh access token
    signing_key: Callable[[], SigningKey]


@dataclass(frozen=True)
class RevocationCase:
    raw: bytes
    endpoint: str  # revoke | introspect
    caller: str | None  # None: no client certificate
    expect: str  # revoked | unchanged | active | inactive | error | refused | any
    status: int = 200
    error: str = ""
    token: str | None = None  # the valid token the case carries, if any
    pre_revoke: bool = False  # the runner revokes ``token`` (as its owner) before sending the case
    labels: tuple[str, ...] = ()

    @property
    def owner(self) -> str | None:
        """The caller the valid token was issued to (``owner`` or ``other``)."""
        return self.labels[2] if self.token is not None else None

    @property
    def jti(self) -> str | None:
        return None if self.token is None else str(claims_of(self.token)["jti"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return value


def sign(key: SigningKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


# -- tokens ----------------------------------------------------------------------------------------------------


def _resigned(rng: random.Random, kit: Kit, canary: str, kind: str) -> str:
    """A token signed by the service's own key (or another one) with one claim or header made wrong."""
    now = int(time.time())
    claims = claims_of(kit.mint("owner")) if rng.random() < 0.3 else _claims(rng, kit, canary, now)
    key, header = kit.signing_key(), {"alg": "ES256", "kid": kit.signing_key().kid, "typ": "at+jwt"}
    if kind == "expired":
        claims.update(iat=now - rng.randint(120, 7200), exp=now - rng.randint(0, 60))
    elif kind == "not_yet_valid":
        claims["nbf"] = now + rng.randint(60, 3600)
    elif kind == "iss_other":
        claims["iss"] = rng.choice(["https://other.example", kit.issuer + "/", kit.issuer.upper()])
    elif kind == "typ_wrong":
        header["typ"] = rng.choice(["JWT", "jwt", "application/jwt", "at+jwt2"])  # media types ignore case: not at+JWT
    elif kind == "other_key":
        key = SigningKey.generate()
        header["kid"] = rng.choice([key.kid, header["kid"], canary])
    return sign(key, header, claims)


def _claims(rng: random.Random, kit: Kit, canary: str, now: int) -> dict[str, Any]:
    """Claims as the service writes them, with the canary in the ``jti``."""
    return {"iss": kit.issuer, "sub": kit.callers["owner"], "client_id": kit.callers["owner"],
            "aud": "https://api.example.org", "iat": now, "exp": now + 600, "jti": f"{canary}-{rng.getrandbits(32):x}",
            "cnf": {"x5t#S256": b64(bytes(32))}}  # fmt: skip


def _mutated(rng: random.Random, kit: Kit, canary: str) -> str:
    """A valid token with one of its three parts changed (the signature no longer matches, or is gone)."""
    head, payload, signature = kit.mint("owner").split(".")
    part = rng.choice(["header", "payload", "signature", "alg_none", "segments"])
    if part == "header":
        header = {"alg": rng.choice(["ES256", "HS256", "ES384", "RS256"]), "kid": canary, "typ": "at+jwt"}
        head = b64(json.dumps(header).encode())
    elif part == "payload":
        claims = claims_of(f"{head}.{payload}.x")
        claims[rng.choice(["sub", "jti", "exp", "aud", "scope"])] = rng.choice([canary, 4102444800, ["x"], None])
        payload = b64(json.dumps(claims).encode())
    elif part == "signature":
        i = rng.randrange(len(signature))
        flipped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
        signature = rng.choice([signature[:i], flipped, "", signature + "AA", signature + "="])
    elif part == "alg_none":
        head, signature = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()), ""
    else:
        return rng.choice([f"{head}.{payload}", f"{head}.{payload}.{signature}.{signature}", f"{head}..{signature}"])
    return f"{head}.{payload}.{signature}"


def _garbage(rng: random.Random, canary: str) -> str:
    return rng.choice([
        canary, tc._jwt_like(canary), f"{canary}.{canary}.{canary}", "....", "a.b.c", f"{canary}\u00e9\u20ac\U0001f600",
        "x" * rng.randint(1000, 15_000) + canary, f"Bearer {canary}", " " + tc._jwt_like(canary),
    ])  # fmt: skip


INVALID_TOKENS = ("expired", "not_yet_valid", "iss_other", "typ_wrong", "other_key", "mutated", "garbage")


def _token(rng: random.Random, kit: Kit, canary: str) -> tuple[str, str, bool]:
    """(token, kind, valid): kind ``owner`` / ``other`` (valid) or one of :data:`INVALID_TOKENS`."""
    roll = rng.random()
    if roll < 0.45:
        kind = "owner" if rng.random() < 0.7 else "other"
        return kit.mint(kind), kind, True
    kind = rng.choice(INVALID_TOKENS)
    if kind == "mutated":
        return _mutated(rng, kit, canary), kind, False
    if kind == "garbage":
        return _garbage(rng, canary), kind, False
    return _resigned(rng, kit, canary, kind), kind, False


# -- invalidating mutations: (stage, mutation) ------------------------------------------------------------------


def _i_method(rng: random.Random, req: Request, canary: str) -> None:
    req.method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])  # HEAD: an answer without a body


def _i_unknown_method(rng: random.Random, req: Request, canary: str) -> None:
    req.method = rng.choice(["FOO", "REVOKE", "PROPFIND"])  # aiohttp's parser refuses some (400), some reach 405


def _i_query(rng: random.Random, req: Request, canary: str) -> None:
    req.target += "?" + rng.choice(["x=1", f"token={canary}", f"c={canary}", "token_type_hint=access_token"])


def _i_token_not_utf8(rng: random.Random, req: Request, canary: str) -> None:
    req.params = [(k, v) for k, v in req.params if k != "token"]
    req.body = req.encoded_body() + f"&token={canary}%FF%FE%C0%AF".encode()


def _i_repeat(rng: random.Random, req: Request, canary: str) -> None:
    """RFC 6749 §3.2: a repeated parameter (``token``, the hint, ``client_id`` or an unknown one)."""
    if req.params and rng.random() < 0.7:
        name, value = rng.choice(req.params)
        req.params.insert(rng.randrange(len(req.params) + 1), (name, rng.choice([value, canary, ""])))
    else:
        req.params += [("token_type_hint", "access_token"), ("token_type_hint", canary)]


def _i_missing(rng: random.Random, req: Request, canary: str) -> None:
    """No ``token``, or an empty one (RFC 6749 §3.1: a parameter without a value is omitted)."""
    req.params = [(k, v) for k, v in req.params if k != "token"]
    if rng.random() < 0.4:
        req.params.insert(rng.randrange(len(req.params) + 1), ("token", ""))


INVALIDATING = [("http", _i_method), ("framing", _i_unknown_method), ("framing", tc._i_framing), ("form", _i_query),
                ("form", tc._i_media_type), ("form", tc._i_coding), ("form", tc._i_big), ("form", tc._i_not_utf8),
                ("form", _i_token_not_utf8), ("params", _i_repeat), ("client_id", tc._i_client_id),
                ("missing", _i_missing)]  # fmt: skip


# -- cases -----------------------------------------------------------------------------------------------------


@dataclass
class _Draft:
    endpoint: str
    caller: str | None
    kind: str  # owner | other | one of INVALID_TOKENS
    valid: bool
    pre_revoke: bool
    stages: set[str] = field(default_factory=set)


def _verdict(d: _Draft) -> tuple[str, int, str]:
    """(expect, status, error) by the order of the service's checks (see the module docstring)."""
    if "framing" in d.stages:
        return "refused", 0, ""
    if "http" in d.stages:
        return "error", 405, "invalid_request"
    if d.caller is None:
        return "error", 401, "invalid_client"
    if d.endpoint == "introspect" and d.caller not in ("rs", "rs_narrow"):
        return "error", 403, "access_denied"
    if d.stages & {"form", "params"}:
        return "error", 400, "invalid_request"
    if "client_id" in d.stages:
        return "error", 401, "invalid_client"
    if "missing" in d.stages:
        return "error", 400, "invalid_request"
    if d.endpoint == "revoke":
        if not d.valid:
            return "unchanged", 200, ""
        if d.caller not in (d.kind, "admin"):
            return "error", 400, "invalid_grant"  # checked before whether it is already revoked
        return ("unchanged" if d.pre_revoke else "revoked"), 200, ""
    active = d.valid and not d.pre_revoke and d.caller == "rs"  # rs_narrow may only know tokens for OTHER_API
    return ("active" if active else "inactive"), 200, ""


def make_case(rng: random.Random, kit: Kit, canary: str) -> RevocationCase:
    """One mutated request and its verdict (see the module docstring)."""
    endpoint = rng.choice(["revoke", "introspect"])
    caller = None if rng.random() < 0.06 else rng.choice(REVOKERS if endpoint == "revoke" else INTROSPECTORS)
    token, kind, valid = _token(rng, kit, canary)
    draft = _Draft(endpoint, caller, kind, valid, pre_revoke=valid and rng.random() < 0.15)
    req = Request(target=f"/{endpoint}", headers=[("Host", "broker.test"), ("Content-Type", FORM)])
    req.params = [("token", token)]
    if rng.random() < 0.5:
        req.params.append(("token_type_hint", rng.choice(["access_token", "refresh_token", "urn:x", canary])))
    if caller is not None and rng.random() < 0.2:
        req.params.append(("client_id", kit.callers[caller]))
    labels = [endpoint, str(caller), kind] + (["pre_revoke"] if draft.pre_revoke else [])
    for mutation in rng.sample(tc.NEUTRAL, rng.randint(0, 3)):
        mutation(rng, req, canary)
        labels.append(mutation.__name__)
    roll = rng.random()
    if roll < 0.45:
        chosen = sorted(rng.sample(INVALIDATING, rng.randint(1, 2)), key=lambda pair: pair[0] != "missing")
        for stage, mutation in chosen:  # "missing" first: a later repeat of the token is still a repeat
            mutation(rng, req, canary)
            draft.stages.add(stage)
            labels.append(mutation.__name__)
    expect, status, error = _verdict(draft)
    raw = req.to_bytes()
    if roll >= 0.88:
        req.headers.append(("X-Canary", canary))
        raw, expect, status, error = tc._chaos(rng, req.to_bytes()), "any", 0, ""
        labels.append("chaos")
    return RevocationCase(raw, endpoint, caller, expect, status, error, token if valid else None,
                          draft.pre_revoke, tuple(labels))  # fmt: skip


# -- the judge -------------------------------------------------------------------------------------------------


def judge(
    case: RevocationCase, status: int, head: bytes, body: bytes, new: tuple[LogEntry, ...] | None, canary: str
) -> list[str]:
    """Every invariant ``case`` breaks with this answer and these new revocation log entries (None: not checked
    here; a concurrent run checks the whole log at its end with :func:`allowed_jtis`)."""
    problems = _invariants(case, status, head, body, new, canary)
    if status != 0 and not problems:
        problems += _expected(case, status, body)
    return [f"{problem} [{','.join(case.labels)}]" for problem in problems]


def _invariants(case: RevocationCase, status: int, head: bytes, body: bytes, new: tuple[LogEntry, ...] | None,
                canary: str) -> list[str]:  # fmt: skip
    problems = []
    if status >= 500:
        problems.append(f"answered {status}")
    if status == 0 and case.expect not in ("refused", "any"):
        problems.append("closed without an answer")
    if canary.encode() in head + body:
        problems.append("the canary came back")
    if case.token is not None and case.token.encode() in head + body:
        problems.append("the token came back")
    if new is not None:
        problems += _log_problems(case, new)
    if status not in (0, 200):
        problems += _error_document(case.endpoint, head, body)
    return problems


def _log_problems(case: RevocationCase, new: tuple[LogEntry, ...]) -> list[str]:
    own = allowed_jtis(case)
    strays = [e for e in new if not (isinstance(e.event, TokenRevoked) and e.event.jti in own)]
    if strays or len(new) > 1:
        return [f"the revocation log changed: {len(new)} entries, {len(strays)} not the case's own token"]
    if case.expect == "revoked" and len(new) != 1:
        return ["a valid revocation appended no entry"]
    return []


def allowed_jtis(case: RevocationCase) -> set[str]:
    """The ``jti`` the case may put on the revocation log: its own valid token's, when it may revoke it."""
    return {case.jti} if case.jti is not None and case.expect in ("revoked", "any") else set()


def _error_document(endpoint: str, head: bytes, body: bytes) -> list[str]:
    """RFC 6749 §5.2 (RFC 7009 §2.2.1, RFC 7662 §2.3): a JSON object of ``error`` and optional description/uri."""
    try:
        document = json.loads(body)
    except ValueError:
        return [f"an error that is not JSON: {body[:80]!r}"]
    codes = REVOKE_ERRORS if endpoint == "revoke" else INTROSPECT_ERRORS
    if not isinstance(document, dict) or not set(document) <= {"error", "error_description", "error_uri"}:
        return [f"an error document with other members: {body[:120]!r}"]
    if document.get("error") not in codes:
        return [f"error code {document.get('error')!r} is not one {endpoint} may answer"]
    if b"application/json" not in head.lower():
        return ["an error without Content-Type: application/json"]
    return []


def _expected(case: RevocationCase, status: int, body: bytes) -> list[str]:
    if case.expect == "any":
        return []
    if case.expect == "refused":
        return [] if 400 <= status < 500 else [f"answered {status}, not a 4xx"]
    if case.expect == "error":
        error = json.loads(body).get("error") if body else None
        return (
            []
            if (status, error) == (case.status, case.error)
            else [f"answered {status} {error}, not {case.status} {case.error}"]
        )
    if status != 200:
        return [f"answered {status} {body[:120]!r}, not 200 ({case.expect})"]
    if case.endpoint == "revoke":
        return [] if body == b"" else [f"a revocation answered a body: {body[:80]!r}"]
    document = json.loads(body)
    if case.expect == "inactive":
        return [] if document == {"active": False} else [f"not exactly inactive: {sorted(document)}"]
    assert case.token is not None
    claims = claims_of(case.token)
    wanted = {"active": True, "token_type": "Bearer", **{k: v for k, v in claims.items() if k in INTROSPECTION_MEMBERS}}
    return [] if document == wanted else [f"not the RFC 7662 §2.2 members of the token: {sorted(document)}"]
