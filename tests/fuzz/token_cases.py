"""Mutated token requests with a known verdict, for the fuzz tests and ``bench/fuzz_token_endpoint.py``.

A case starts from a valid request (``client_credentials`` or RFC 8693 token exchange with a fresh JWT-SVID) and
gets *neutral* mutations, which keep it valid (parameter order, header case, charset, chunked framing, needless
percent-encoding, unknown parameters: RFC 6749 §3.2 says to ignore them), and *invalidating* ones, each of which
alone makes it invalid (method, path, query string, media type, content coding, grant, audience, scope,
Authorization header, size, encoding, ``client_id``, subject token, framing). The verdict follows:

* ``token``: no invalidating mutation: must get 200 with an ``access_token``;
* ``refused``: at least one: must get a 4xx without ``access_token``;
* ``any``: random byte edits on top (chaos): only "never a 5xx".

Every case carries the canary (a header, a parameter value, an Authorization value or malformed bytes): it must
never come back in a response nor reach a log.
"""

from __future__ import annotations

import base64
import gzip
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

GRANT_CC = "client_credentials"
GRANT_TE = "urn:ietf:params:oauth:grant-type:token-exchange"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Target:
    """What a valid request needs: the allowed audience and scopes, the client's ID and a JWT-SVID minter."""

    audience: str
    scopes: tuple[str, ...]
    client_id: str
    mint_subject_token: Callable[[], str]


@dataclass
class Request:
    method: str = "POST"
    target: str = "/token"
    headers: list[tuple[str, str]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # set when a mutation replaces the encoded form
    chunked: bool = False
    percent_all: bool = False  # percent-encode every byte of every value (decodes to the same form)
    raw_head_lines: list[bytes] = field(default_factory=list)  # framing mutations, added verbatim

    def encoded_body(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.percent_all:
            return "&".join(f"{k}=" + "".join(f"%{b:02X}" for b in v.encode()) for k, v in self.params).encode()
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.params).encode()

    def to_bytes(self) -> bytes:
        body = self.encoded_body()
        lines = [f"{self.method} {self.target} HTTP/1.1".encode()]
        lines += [f"{name}: {value}".encode() for name, value in self.headers]
        lines += self.raw_head_lines
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            body = _chunk(body)
        elif not any(line.lower().startswith(b"content-length") for line in self.raw_head_lines):
            lines.append(f"Content-Length: {len(body)}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Case:
    raw: bytes
    expect: str  # token | refused | any
    labels: tuple[str, ...]


def _chunk(body: bytes) -> bytes:
    out, i = b"", 0
    while i < len(body):
        size = min(len(body) - i, 1 + (len(body) // 3 or 1))
        out += f"{size:x}\r\n".encode() + body[i : i + size] + b"\r\n"
        i += size
    return out + b"0\r\n\r\n"


def _jwt_like(canary: str) -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"JWT"}').rstrip(b"=").decode()
    return f"{head}.{canary}.c2ln"


def _base(rng: random.Random, target: Target) -> Request:
    req = Request(headers=[("Host", "broker.test"), ("Content-Type", FORM)])
    if rng.random() < 0.7:
        req.params = [("grant_type", GRANT_CC), ("audience", target.audience)]
    else:
        req.params = [
            ("grant_type", GRANT_TE),
            ("subject_token", target.mint_subject_token()),
            ("subject_token_type", TYPE_JWT),
            ("audience", target.audience),
        ]
    if rng.random() < 0.5:
        chosen = [s for s in target.scopes if rng.random() < 0.5]
        if chosen:
            req.params.append(("scope", " ".join(chosen)))
    if rng.random() < 0.2:
        req.params.append(("client_id", target.client_id))
    return req


# -- neutral mutations: the request stays valid -------------------------------------------------------------------


def _n_order(rng: random.Random, req: Request, canary: str) -> None:
    rng.shuffle(req.params)


def _n_header_case(rng: random.Random, req: Request, canary: str) -> None:
    req.headers = [(rng.choice([n.lower(), n.upper(), n]), v) for n, v in req.headers]


def _n_charset(rng: random.Random, req: Request, canary: str) -> None:
    req.headers = [(n, f"{FORM}; charset={rng.choice(['utf-8', 'UTF-8'])}") if n == "Content-Type" else (n, v)
                   for n, v in req.headers]  # fmt: skip


def _n_note(rng: random.Random, req: Request, canary: str) -> None:
    req.headers.append((rng.choice(["X-Note", "User-Agent", "X-Request-Id"]), canary))


def _n_unknown(rng: random.Random, req: Request, canary: str) -> None:
    req.params.insert(rng.randrange(len(req.params) + 1), (rng.choice(["state", "foo", "x"]), canary))


def _n_chunked(rng: random.Random, req: Request, canary: str) -> None:
    req.chunked = True


def _n_identity(rng: random.Random, req: Request, canary: str) -> None:
    req.headers.append(("Content-Encoding", "identity"))


def _n_pct(rng: random.Random, req: Request, canary: str) -> None:
    req.percent_all = True


NEUTRAL = [_n_order, _n_header_case, _n_charset, _n_note, _n_unknown, _n_chunked, _n_identity, _n_pct]


# -- invalidating mutations: each alone makes the request invalid ------------------------------------------------


def _i_method(rng: random.Random, req: Request, canary: str) -> None:
    req.method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"])


def _i_path(rng: random.Random, req: Request, canary: str) -> None:
    req.target = rng.choice(["/token/", "/Token", "/tokens", "/", "/token?x=1", f"/token?c={canary}", "/token/x"])


def _i_media_type(rng: random.Random, req: Request, canary: str) -> None:
    kind = rng.choice(["text/plain", "application/json", "multipart/form-data; boundary=x", f"{FORM}; charset=latin-1"])
    req.headers = [(n, v) for n, v in req.headers if n.lower() != "content-type"]
    if rng.random() < 0.8:
        req.headers.append(("Content-Type", kind))


def _i_coding(rng: random.Random, req: Request, canary: str) -> None:
    coding = rng.choice(["gzip", "deflate", "br", "x-" + canary])
    req.headers.append(("Content-Encoding", coding))
    form = req.encoded_body()
    req.body = rng.choice([gzip.compress(form), zlib.compress(form), b"\x00\x01" + canary.encode()])


def _i_grant(rng: random.Random, req: Request, canary: str) -> None:
    req.params = [(k, v) for k, v in req.params if k != "grant_type"]
    choice = rng.choice(["missing", "unknown", "repeated"])
    if choice == "unknown":
        req.params.append(("grant_type", rng.choice(["password", "authorization_code", canary])))
    elif choice == "repeated":
        req.params += [("grant_type", GRANT_CC), ("grant_type", GRANT_CC)]


def _i_audience(rng: random.Random, req: Request, canary: str) -> None:
    original = [v for k, v in req.params if k == "audience"]
    req.params = [(k, v) for k, v in req.params if k != "audience"]
    choice = rng.choice(["missing", "other", "two", "canary"])
    if choice == "other":
        req.params.append(("audience", "https://evil.example"))
    elif choice == "two":
        req.params += [("audience", original[0]), ("audience", "https://evil.example")]
    elif choice == "canary":
        req.params.append(("audience", f"https://{canary}.example"))


def _i_scope(rng: random.Random, req: Request, canary: str) -> None:
    req.params = [(k, v) for k, v in req.params if k != "scope"]
    req.params.append(
        ("scope", rng.choice(["admin", "orders:read  orders:write", '"q"', "orders:read ", canary + "\\"]))
    )


def _i_authorization(rng: random.Random, req: Request, canary: str) -> None:
    value = rng.choice([f"Bearer {_jwt_like(canary)}", "Basic " + base64.b64encode(f"{canary}:x".encode()).decode()])
    req.headers.append(("Authorization", value))


def _i_big(rng: random.Random, req: Request, canary: str) -> None:
    req.params.append(("pad", canary + "x" * (64 * 1024)))


def _i_not_utf8(rng: random.Random, req: Request, canary: str) -> None:
    req.body = req.encoded_body() + f"&state={canary}%FF%FE".encode()


def _i_client_id(rng: random.Random, req: Request, canary: str) -> None:
    req.params = [(k, v) for k, v in req.params if k != "client_id"]
    req.params.append(("client_id", rng.choice(["spiffe://example.org/other", f"spiffe://example.org/{canary}"])))


def _i_subject(rng: random.Random, req: Request, canary: str) -> None:
    req.params = [(k, v) for k, v in req.params if k not in ("grant_type", "subject_token", "subject_token_type")]
    req.params += [("grant_type", GRANT_TE), ("subject_token_type", TYPE_JWT)]
    req.params.append(("subject_token", rng.choice([_jwt_like(canary), canary, _jwt_like(canary) + "." + canary])))


def _i_framing(rng: random.Random, req: Request, canary: str) -> None:
    req.raw_head_lines.append(
        rng.choice(
            [
                b"Content-Length: 1\r\nContent-Length: 2",
                f"X-Bad\x01: {canary}".encode(),
                f"X-Nul: {canary}\x00".encode(),
                f" X-Fold: {canary}".encode(),
                f"X-Long: {canary}{'a' * 9000}".encode(),
                f"X Space: {canary}".encode(),
            ]
        )
    )
    if rng.random() < 0.3:
        req.chunked = True
        req.raw_head_lines.append(b"Content-Length: 5")


INVALIDATING = [_i_method, _i_path, _i_media_type, _i_coding, _i_grant, _i_audience, _i_scope, _i_authorization,
                _i_big, _i_not_utf8, _i_client_id, _i_subject, _i_framing]  # fmt: skip


def _chaos(rng: random.Random, raw: bytes) -> bytes:
    """1-3 byte edits in the request head (flip, insert, delete)."""
    head_end = raw.find(b"\r\n\r\n")
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(max(1, head_end))
        op = rng.random()
        if op < 0.4:
            data[i] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            data.insert(i, rng.randrange(256))
        else:
            del data[i]
    return bytes(data)


def make_case(rng: random.Random, target: Target, canary: str) -> Case:
    """One mutated request and its verdict (see the module docstring)."""
    req = _base(rng, target)
    labels = []
    for mutation in rng.sample(NEUTRAL, rng.randint(0, 3)):
        mutation(rng, req, canary)
        labels.append(mutation.__name__)
    roll = rng.random()
    invalid = rng.sample(INVALIDATING, rng.randint(1, 2)) if roll < 0.5 else []
    for mutation in invalid:
        mutation(rng, req, canary)
        labels.append(mutation.__name__)
    raw = req.to_bytes()
    if roll >= 0.85:
        req.headers.append(("X-Canary", canary))
        return Case(_chaos(rng, req.to_bytes()), "any", (*labels, "chaos"))
    return Case(raw, "refused" if invalid else "token", tuple(labels))
