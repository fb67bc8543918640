"""The audit journal's event types: a stable ``event`` name and a canonical JSON body each.

Every security decision and administrative change is one of these (issue 9, item 4). The body is canonical JSON
(RFC 8785's shape for the values used here: object keys sorted, no whitespace, UTF-8), so the same event always
hashes to the same bytes in the chain (:mod:`broker.audit.journal`). The names are an interface for SIEM rules:
a name is never reused for another meaning.

No body ever holds a token, a JWT, a key or a secret:

* no event has a field for one: tokens are named by ``jti``, keys by ``kid``, KEKs by their id, client
  certificates by their ``x5t#S256`` thumbprint (RFC 8705 §3.1), policy files by path and SHA-256, API-key
  exception secrets by exception name and version number (``apikey.*``: the scrub below cannot recognise an
  opaque vendor key, so its events are built from the record's metadata only, never from a request body);
* a refusal records the error code, never the request (a form may carry a JWT-SVID or a client assertion);
* an admin call records the request path without its query string;
* as a last guard, every string is scrubbed: a JWS compact serialisation (RFC 7515 §7.1, which begins ``eyJ``,
  the encoding of ``{"``) or a PEM block (RFC 7468) becomes ``[redacted]``, and free text is cut at
  :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from json.encoder import encode_basestring
from typing import Any, ClassVar, Protocol

__all__ = [
    "EVENT_TYPES",
    "MAX_TEXT",
    "REDACTED",
    "AdminCall",
    "ApiKeyAdded",
    "ApiKeyEgressRefused",
    "ApiKeyGranted",
    "ApiKeyRefused",
    "ApiKeyResumed",
    "ApiKeyRevealed",
    "ApiKeyReviewed",
    "ApiKeyRevokedRecorded",
    "ApiKeyRotated",
    "ApiKeySuspended",
    "ApiKeyUpdated",
    "AuditEvent",
    "ClientDisabled",
    "ClientEnabled",
    "ClientRegistered",
    "ClientRemoved",
    "KekRotated",
    "KeyCreated",
    "KeyRetired",
    "KeyRevoked",
    "KeyRotated",
    "PolicyRefused",
    "PolicyReloaded",
    "StoreMigrated",
    "SubjectQuarantinedRecorded",
    "SubjectReleasedRecorded",
    "TokenIssued",
    "TokenRefused",
    "TokenRevocationRecorded",
    "canonical_json",
    "scrub",
    "token_issued_body",
]

MAX_TEXT = 300
REDACTED = "[redacted]"
_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.~+/=-]*"  # a JWS/JWE compact serialisation (header {" in base64url)
    r"|-----BEGIN[^-]*-----.*?(?:-----END[^-]*-----|$)",  # a PEM block, even a cut one
    re.DOTALL,
)


def _secret_shaped(text: str) -> bool:
    """Whether ``text`` holds something :data:`_SECRET_SHAPES` matches (each match begins with one of two literals:
    looking for them first is several times cheaper than the regular expression on the usual body)."""
    return ("eyJ" in text or "-----BEGIN" in text) and _SECRET_SHAPES.search(text) is not None


class AuditEvent(Protocol):
    """What the trail records: a stable name and a canonical JSON body."""

    event: ClassVar[str]

    def body(self) -> bytes: ...


def canonical_json(value: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII kept as is); floats are not used in audit bodies."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def scrub(text: str) -> str:
    """``text`` with anything shaped like a token or a PEM block replaced, cut at :data:`MAX_TEXT` characters."""
    cleaned = _SECRET_SHAPES.sub(REDACTED, text)
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 3] + "..."


def _plain(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {scrub(str(k)): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int):
        return value
    raise TypeError(f"an audit body holds strings, integers, booleans, lists and null, not {type(value).__name__}")


def _is_plain_text(value: object) -> bool:
    """A value the fast path may serialise as it is: an integer, None, or strings no longer than MAX_TEXT."""
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    if isinstance(value, tuple):
        return all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value)
    return value is None or isinstance(value, int)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class _Event:
    event: ClassVar[str]

    def body(self) -> bytes:
        """The canonical JSON body. Fast path (every token issued takes it): when every value is plain and the
        serialised body has nothing shaped like a token or a PEM block, that serialisation is the body (it is what
        the per-field path would make); otherwise each string is scrubbed and cut on its own."""
        values = {name: getattr(self, name) for name in _field_names(type(self))}
        if all(_is_plain_text(v) for v in values.values()):
            text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if not _secret_shaped(text):
                return text.encode()
        return canonical_json({name: _plain(value) for name, value in values.items()})


@dataclass(frozen=True, slots=True)
class TokenIssued(_Event):
    """An access token was issued (RFC 9068 claims, by name; never the token)."""

    event: ClassVar[str] = "token.issued"
    jti: str
    kid: str
    sub: str
    client_id: str
    aud: tuple[str, ...]
    scope: tuple[str, ...]
    binding: str  # "x5t#S256=<thumbprint>"
    auth_method: str
    exp: int  # seconds since the epoch

    def body(self) -> bytes:
        return token_issued_body(self.jti, self.kid, self.sub, self.client_id, self.aud, self.scope, self.binding,
                                 self.auth_method, self.exp)  # fmt: skip


def token_issued_body(
    jti: str, kid: str, sub: str, client_id: str, aud: tuple[str, ...], scope: tuple[str, ...], binding: str,
    auth_method: str, exp: int,
) -> bytes:  # fmt: skip
    """``TokenIssued(...).body()`` without building the event: the token endpoint's recorder makes one per token.

    The same bytes as :meth:`_Event.body` (a test holds the two to each other): the keys in sorted order, each
    string as ``json.dumps`` writes it with ``ensure_ascii=False``. A string longer than :data:`MAX_TEXT`, or a
    body with anything shaped like a token or a PEM block, takes the per-field path that scrubs and cuts."""
    e = encode_basestring
    if max(len(jti), len(kid), len(sub), len(client_id), len(binding), len(auth_method),
           *map(len, aud), *map(len, scope)) <= MAX_TEXT:  # fmt: skip
        text = (
            f'{{"aud":[{",".join(map(e, aud))}],"auth_method":{e(auth_method)},"binding":{e(binding)},'
            f'"client_id":{e(client_id)},"exp":{int.__repr__(exp)},"jti":{e(jti)},"kid":{e(kid)},'
            f'"scope":[{",".join(map(e, scope))}],"sub":{e(sub)}}}'
        )
        if not _secret_shaped(text):
            return text.encode()
    event = TokenIssued(jti, kid, sub, client_id, aud, scope, binding, auth_method, exp)
    return _Event.body(event)


@dataclass(frozen=True, slots=True)
class TokenRefused(_Event):
    """A token request was refused: the RFC 6749 §5.2 error code; who asked and how, when known."""

    event: ClassVar[str] = "token.refused"
    error: str
    spiffe_id: str | None = None  # None: refused before the client was authenticated
    grant_type: str | None = None
    status: int | None = None
    reason: str | None = None  # a code from the broker, never the client's words: "quarantined"


@dataclass(frozen=True, slots=True)
class KeyRotated(_Event):
    event: ClassVar[str] = "key.rotated"
    activated: str  # the kid that signs from now on
    retiring: str | None  # the kid that stopped signing
    next: str | None  # the kid published to sign next
    reason: str = "scheduled"  # "scheduled" or "manual"


@dataclass(frozen=True, slots=True)
class KeyRevoked(_Event):
    event: ClassVar[str] = "key.revoked"
    kid: str
    activated: str | None  # the fresh key made active, if the revoked one was signing
    live_tokens: int | None = None  # the ledger's blast radius, when known
    actor: str | None = None  # the admin SPIFFE ID, or None for a local CLI


@dataclass(frozen=True, slots=True)
class KeyCreated(_Event):
    """A signing key entered the keyring: generated, or imported from the legacy key files on first start."""

    event: ClassVar[str] = "key.created"
    kid: str
    state: str  # "next", "active" or "retiring"
    origin: str  # "generated" or "imported"


@dataclass(frozen=True, slots=True)
class KeyRetired(_Event):
    """A retiring key's overlap has passed: it left the JWKS (nothing it signed is still live)."""

    event: ClassVar[str] = "key.retired"
    kid: str


@dataclass(frozen=True, slots=True)
class KekRotated(_Event):
    event: ClassVar[str] = "key.kek_rotated"
    old_kek_id: str
    new_kek_id: str
    keys: int  # keys re-wrapped
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyReloaded(_Event):
    event: ClassVar[str] = "policy.reloaded"
    source: str  # the file's path
    sha256: str  # hex digest of the file as loaded


@dataclass(frozen=True, slots=True)
class PolicyRefused(_Event):
    """A policy file was refused; the last good policy stays in force. ``reason`` never quotes the file."""

    event: ClassVar[str] = "policy.refused"
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoreMigrated(_Event):
    event: ClassVar[str] = "store.migrated"
    store: str  # the store URL, redacted (StoreUrl.redacted(): never a password)
    from_version: int
    to_version: int


@dataclass(frozen=True, slots=True)
class AdminCall(_Event):
    """A call to the admin API (``/admin/v1/...``): who, what, and how it ended. The path has no query string."""

    event: ClassVar[str] = "admin.call"
    actor: str | None  # the caller's SPIFFE ID; None when the certificate named none
    method: str
    path: str
    outcome: str  # refused / served / requested / done / failed (broker.admin.ports.Outcome), or "ok"
    status: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)  # the call's arguments and result: JSON values only

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", self.path.partition("?")[0])


@dataclass(frozen=True, slots=True)
class TokenRevocationRecorded(_Event):
    """One access token revoked (RFC 7009 at ``/revoke``, or by an admin): its ``jti`` and subject, never the token.

    ``by`` is ``client`` (the holder revoked its own token) or ``admin``.
    """

    event: ClassVar[str] = "token.revoked"
    jti: str
    sub: str
    exp: int  # seconds since the epoch: the log keeps the jti until then
    by: str
    actor: str | None = None  # the caller's SPIFFE ID


@dataclass(frozen=True, slots=True)
class SubjectQuarantinedRecorded(_Event):
    """A SPIFFE ID or prefix was quarantined: new grants refused, live tokens revoked (``live_tokens`` of them)."""

    event: ClassVar[str] = "subject.quarantined"
    pattern: str
    reason: str
    until: int | None  # seconds since the epoch; None: until released
    live_tokens: int | None  # None: the issuance ledger did not answer (the cutoff still refuses them)
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectReleasedRecorded(_Event):
    """A quarantine ended by release; the tokens it revoked stay revoked."""

    event: ClassVar[str] = "subject.released"
    pattern: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientRegistered(_Event):
    """A client was added to the client registry (RFC 7523 §2.2 ``private_key_jwt``; RFC 7591 §2 metadata).

    Its keys are named, never given: ``jwks_uri``, or the ``kid`` values of its inline ``jwks``."""

    event: ClassVar[str] = "client.registered"
    client_id: str
    spiffe_id: str
    jwks_uri: str | None
    kids: tuple[str, ...]  # the inline keys' kid values (those without one are counted in ``inline_keys``)
    inline_keys: int
    algorithms: tuple[str, ...]
    max_assertion_lifetime: int
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientDisabled(_Event):
    """A registered client is refused (``invalid_client``) from now on, without being forgotten."""

    event: ClassVar[str] = "client.disabled"
    client_id: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientEnabled(_Event):
    event: ClassVar[str] = "client.enabled"
    client_id: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientRemoved(_Event):
    event: ClassVar[str] = "client.removed"
    client_id: str
    spiffe_id: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class _ApiKeyChange(_Event):
    """An admin's change to a governed API-key exception (issue 12): who, which, and the fields it changed, before
    and after. The secret and its sealed bytes have no field: a version is named by number and KEK id."""

    name: str
    actor: str | None
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyAdded(_ApiKeyChange):
    event: ClassVar[str] = "apikey.added"


@dataclass(frozen=True, slots=True)
class ApiKeyUpdated(_ApiKeyChange):
    event: ClassVar[str] = "apikey.updated"


@dataclass(frozen=True, slots=True)
class ApiKeyRotated(_ApiKeyChange):
    event: ClassVar[str] = "apikey.rotated"


@dataclass(frozen=True, slots=True)
class ApiKeySuspended(_ApiKeyChange):
    event: ClassVar[str] = "apikey.suspended"


@dataclass(frozen=True, slots=True)
class ApiKeyResumed(_ApiKeyChange):
    event: ClassVar[str] = "apikey.resumed"


@dataclass(frozen=True, slots=True)
class ApiKeyRevokedRecorded(_ApiKeyChange):
    event: ClassVar[str] = "apikey.revoked"


@dataclass(frozen=True, slots=True)
class ApiKeyReviewed(_ApiKeyChange):
    event: ClassVar[str] = "apikey.reviewed"


@dataclass(frozen=True, slots=True)
class ApiKeyRevealed(_ApiKeyChange):
    """An admin read a secret version in clear (``after`` names the version, never its value)."""

    event: ClassVar[str] = "apikey.revealed"


@dataclass(frozen=True, slots=True)
class ApiKeyGranted(_Event):
    """A sidecar received version ``version`` of exception ``name``'s secret, to hold until ``hold_until``."""

    event: ClassVar[str] = "apikey.granted"
    spiffe_id: str
    name: str
    version: int
    hold_until: int  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class ApiKeyRefused(_Event):
    """A grant was refused; ``reason`` is a broker code (``not_allowed``, ``suspended``, ``review_overdue`` ...)."""

    event: ClassVar[str] = "apikey.refused"
    spiffe_id: str
    name: str
    reason: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyEgressRefused(_Event):
    """A sidecar's egress proxy refused ``count`` requests of one kind (its report, aggregated).
    ``suspected_exfiltration``: the placeholder was sent to a target the exception does not cover."""

    event: ClassVar[str] = "apikey.egress_refused"
    spiffe_id: str
    name: str | None
    target: str
    reason: str
    count: int
    first_at: int  # seconds since the epoch
    last_at: int
    suspected_exfiltration: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyUsed(_Event):
    """A sidecar injected version ``version`` of ``name`` into ``count`` requests to ``target`` (``https://host:port``)
    since its previous report, the last at ``last_at``: one record per report and target, never one per request."""

    event: ClassVar[str] = "apikey.used"
    spiffe_id: str
    name: str
    version: int
    target: str
    count: int
    last_at: int  # seconds since the epoch


EVENT_TYPES: dict[str, type[_Event]] = {
    cls.event: cls
    for cls in (
        TokenIssued, TokenRefused, KeyCreated, KeyRotated, KeyRetired, KeyRevoked, KekRotated, PolicyReloaded,
        PolicyRefused, StoreMigrated, AdminCall, TokenRevocationRecorded, SubjectQuarantinedRecorded,
        SubjectReleasedRecorded, ClientRegistered, ClientDisabled, ClientEnabled, ClientRemoved, ApiKeyAdded,
        ApiKeyUpdated, ApiKeyRotated, ApiKeySuspended, ApiKeyResumed, ApiKeyRevokedRecorded, ApiKeyReviewed,
        ApiKeyRevealed, ApiKeyGranted, ApiKeyRefused, ApiKeyEgressRefused, ApiKeyUsed,
    )
}  # fmt: skip
