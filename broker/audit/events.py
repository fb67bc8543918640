"""The audit journal's event types: a stable ``event`` name and a canonical JSON body each.

Every security decision and administrative change is one of these (issue 9, item 4). The body is canonical JSON
(RFC 8785's shape for the values used here: object keys sorted, no whitespace, UTF-8), so the same event always
hashes to the same bytes in the chain (:mod:`broker.audit.journal`). The names are an interface for SIEM rules:
a name is never reused for another meaning.

No body ever holds a token, a JWT, a key or a secret:

* no event has a field for one: tokens are named by ``jti``, keys by ``kid``, KEKs by their id, client
  certificates by their ``x5t#S256`` thumbprint (RFC 8705 §3.1), policy files by path and SHA-256, API-key
  exception secrets by exception name and version number (``apikey.*``, :mod:`broker.audit.apikey_events`: the
  scrub cannot recognise an opaque vendor key, so those are built from the record's metadata only);
* a refusal records the error code, never the request (a form may carry a JWT-SVID or a client assertion);
* an admin call records the request path without its query string;
* as a last guard, every string is scrubbed (:mod:`broker.audit._event`): a JWS compact serialisation
  (RFC 7515 §7.1, which begins ``eyJ``,
  the encoding of ``{"``) or a PEM block (RFC 7468) becomes ``[redacted]``, and free text is cut at
  :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, ClassVar

from broker.audit._event import MAX_TEXT, REDACTED, AuditEvent, Event, canonical_json, scrub, secret_shaped
from broker.audit.apikey_events import APIKEY_EVENTS

__all__ = [
    "EVENT_TYPES",
    "MAX_TEXT",
    "REDACTED",
    "AdminCall",
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


@dataclass(frozen=True, slots=True)
class TokenIssued(Event):
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
        if not secret_shaped(text):
            return text.encode()
    event = TokenIssued(jti, kid, sub, client_id, aud, scope, binding, auth_method, exp)
    return Event.body(event)


@dataclass(frozen=True, slots=True)
class TokenRefused(Event):
    """A token request was refused: the RFC 6749 §5.2 error code; who asked and how, when known."""

    event: ClassVar[str] = "token.refused"
    error: str
    spiffe_id: str | None = None  # None: refused before the client was authenticated
    grant_type: str | None = None
    status: int | None = None
    reason: str | None = None  # a code from the broker, never the client's words: "quarantined"


@dataclass(frozen=True, slots=True)
class KeyRotated(Event):
    event: ClassVar[str] = "key.rotated"
    activated: str  # the kid that signs from now on
    retiring: str | None  # the kid that stopped signing
    next: str | None  # the kid published to sign next
    reason: str = "scheduled"  # "scheduled" or "manual"


@dataclass(frozen=True, slots=True)
class KeyRevoked(Event):
    event: ClassVar[str] = "key.revoked"
    kid: str
    activated: str | None  # the fresh key made active, if the revoked one was signing
    live_tokens: int | None = None  # the ledger's blast radius, when known
    actor: str | None = None  # the admin SPIFFE ID, or None for a local CLI


@dataclass(frozen=True, slots=True)
class KeyCreated(Event):
    """A signing key entered the keyring: generated, or imported from the legacy key files on first start."""

    event: ClassVar[str] = "key.created"
    kid: str
    state: str  # "next", "active" or "retiring"
    origin: str  # "generated" or "imported"


@dataclass(frozen=True, slots=True)
class KeyRetired(Event):
    """A retiring key's overlap has passed: it left the JWKS (nothing it signed is still live)."""

    event: ClassVar[str] = "key.retired"
    kid: str


@dataclass(frozen=True, slots=True)
class KekRotated(Event):
    event: ClassVar[str] = "key.kek_rotated"
    old_kek_id: str
    new_kek_id: str
    keys: int  # keys re-wrapped
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyReloaded(Event):
    event: ClassVar[str] = "policy.reloaded"
    source: str  # the file's path
    sha256: str  # hex digest of the file as loaded


@dataclass(frozen=True, slots=True)
class PolicyRefused(Event):
    """A policy file was refused; the last good policy stays in force. ``reason`` never quotes the file."""

    event: ClassVar[str] = "policy.refused"
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoreMigrated(Event):
    event: ClassVar[str] = "store.migrated"
    store: str  # the store URL, redacted (StoreUrl.redacted(): never a password)
    from_version: int
    to_version: int


@dataclass(frozen=True, slots=True)
class AdminCall(Event):
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
class TokenRevocationRecorded(Event):
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
class SubjectQuarantinedRecorded(Event):
    """A SPIFFE ID or prefix was quarantined: new grants refused, live tokens revoked (``live_tokens`` of them)."""

    event: ClassVar[str] = "subject.quarantined"
    pattern: str
    reason: str
    until: int | None  # seconds since the epoch; None: until released
    live_tokens: int | None  # None: the issuance ledger did not answer (the cutoff still refuses them)
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectReleasedRecorded(Event):
    """A quarantine ended by release; the tokens it revoked stay revoked."""

    event: ClassVar[str] = "subject.released"
    pattern: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientRegistered(Event):
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
class ClientDisabled(Event):
    """A registered client is refused (``invalid_client``) from now on, without being forgotten."""

    event: ClassVar[str] = "client.disabled"
    client_id: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientEnabled(Event):
    event: ClassVar[str] = "client.enabled"
    client_id: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ClientRemoved(Event):
    event: ClassVar[str] = "client.removed"
    client_id: str
    spiffe_id: str
    actor: str | None = None


_EVENTS: tuple[type[Event], ...] = (
    TokenIssued, TokenRefused, KeyCreated, KeyRotated, KeyRetired, KeyRevoked, KekRotated, PolicyReloaded,
    PolicyRefused, StoreMigrated, AdminCall, TokenRevocationRecorded, SubjectQuarantinedRecorded,
    SubjectReleasedRecorded, ClientRegistered, ClientDisabled, ClientEnabled, ClientRemoved, *APIKEY_EVENTS,
)  # fmt: skip
EVENT_TYPES: dict[str, type[Event]] = {cls.event: cls for cls in _EVENTS}
