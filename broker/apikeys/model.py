"""A governed API-key exception: what it is, who owns it, where it may go, and its status at a given time.

An :class:`ApiKeyException` is the record an owner registers for a third-party API that still demands a static key
(issue 12). Its secret is not part of it: secret versions are sealed separately (:class:`SealedVersion`) under
the store's KEK, bound to ``(name, version)`` as associated data.

:func:`check_exception` is the one validator; every store runs it before it writes, so a stored record is always
a valid one. Policy that depends on configuration (the longest allowed lifetime, the ticket pattern, whether
wildcard hosts or ``reveal`` are allowed) is :class:`~broker.apikeys.rules.GovernanceRules`, applied by the
registry before the store sees a change.

Status is derived, never stored (:func:`status_at`): ``revoked`` and ``suspended`` come from actions,
``expired`` from ``expires_at``, ``review-overdue`` from the last review plus the review interval; otherwise
``active``. An overdue exception is still usable for the configured review grace period, then refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from broker.events.revocations import SubjectPattern

__all__ = [
    "MAX_SECRET_BYTES",
    "PLACEHOLDER_PREFIX",
    "ApiKeyException",
    "Delivery",
    "Presentation",
    "SealedVersion",
    "State",
    "Status",
    "Target",
    "UseRecord",
    "check_exception",
    "check_secret",
    "placeholder",
    "review_due",
    "secret_aad",
    "status_at",
]

MAX_SECRET_BYTES = 4096
PLACEHOLDER_PREFIX = "spiffe-broker:exception/"
SECRET_SLOT = "{secret}"  # noqa: S105  (the placeholder in a presentation template, not a secret)
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # RFC 9110 §5.1 field-name = token
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")  # RFC 3986 §2.3 unreserved: no encoding needed
_CONTACT = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
# Headers the proxy owns or that carry hop-by-hop meaning (RFC 9110 §7.6.1, RFC 9112 §6.1): never a credential slot.
_RESERVED_HEADERS = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "te", "trailer", "upgrade", "keep-alive",
     "proxy-connection", "proxy-authorization", "proxy-authenticate", "expect"}
)  # fmt: skip


class State(StrEnum):
    """What an action set; ``active`` until suspended or revoked. ``revoked`` is final."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class Status(StrEnum):
    ACTIVE = "active"
    REVIEW_OVERDUE = "review-overdue"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Delivery(StrEnum):
    INJECT = "inject"  # the sidecar adds the secret to the outgoing request; the app never sees it
    REVEAL = "reveal"  # handed to the app (only where configuration allows it); marked in every report


@dataclass(frozen=True, slots=True)
class Target:
    """Where the secret may be sent: ``https://host:port`` and paths under ``path_prefix``.

    ``host`` is exact (lower-case ASCII, IDNA A-labels); ``*.example.com`` matches one DNS label more (letters,
    digits and inner hyphens, at most 63) and only when the record opts in with ``wildcard_host`` (and the rules
    allow it).
    """

    host: str
    port: int = 443
    path_prefix: str = "/"
    scheme: str = "https"
    wildcard_host: bool = False

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if scheme != self.scheme or port != self.port or not self.covers_path(path):
            return False
        host = host.lower().rstrip(".")
        if self.wildcard_host and self.host.startswith("*."):
            head, _, rest = host.partition(".")
            return _HOST_LABEL.fullmatch(head) is not None and rest == self.host[2:]
        return host == self.host

    def covers_path(self, path: str) -> bool:
        """``path`` is the prefix or below it at a segment boundary: ``/v1`` covers ``/v1`` and ``/v1/x``, never
        ``/v1-admin`` (a prefix ending in ``/`` covers what starts with it)."""
        prefix = self.path_prefix
        if prefix.endswith("/"):
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + "/")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path_prefix}"


@dataclass(frozen=True, slots=True)
class Presentation:
    """How the secret is presented: ``header`` ``name: template`` or ``query`` ``?name=template``, where
    ``template`` holds ``{secret}`` exactly once (for example ``Bearer {secret}``)."""

    kind: str  # "header" or "query"
    name: str
    template: str = SECRET_SLOT

    def render(self, secret: str) -> str:
        return self.template.replace(SECRET_SLOT, secret)


@dataclass(frozen=True, slots=True)
class ApiKeyException:
    name: str
    target: Target
    owner: str
    contact: str
    justification: str
    ticket: str
    expires_at: datetime
    review_interval: timedelta
    allowed: tuple[SubjectPattern, ...]
    presentation: Presentation
    delivery: Delivery = Delivery.INJECT
    state: State = State.ACTIVE
    state_reason: str = ""
    last_review_at: datetime | None = None
    last_review_by: str = ""
    current_version: int = 0
    revision: int = 0  # bumped by every store write: the compare-and-set token for updates
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def allows(self, spiffe_id: str) -> bool:
        return any(pattern.matches(spiffe_id) for pattern in self.allowed)

    @property
    def placeholder(self) -> str:
        return placeholder(self.name)


@dataclass(frozen=True, slots=True)
class SealedVersion:
    """One secret version as stored: sealed under ``kek_id`` with :func:`secret_aad` as associated data.

    ``superseded_at`` is when a rotation replaced it; it stays usable until ``superseded_at`` plus the rotation
    grace (the registry's rule), then never again.
    """

    name: str
    version: int
    sealed: bytes = field(repr=False)
    kek_id: str
    created_at: datetime
    superseded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UseRecord:
    """Aggregated uses of one version by one workload at one target: a count and the last time."""

    name: str
    spiffe_id: str
    version: int
    target: str
    count: int
    last_used_at: datetime


def placeholder(name: str) -> str:
    """The value an app is configured with instead of the key: the sidecar swaps in the secret at egress."""
    return PLACEHOLDER_PREFIX + name


def secret_aad(name: str, version: int) -> bytes:
    """The associated data binding a sealed secret to its row: a ciphertext moved to another row does not open."""
    return f"spiffe-broker apikey\x00{name}\x00{version}".encode("ascii")


def review_due(record: ApiKeyException) -> datetime:
    reviewed = record.last_review_at or record.created_at
    if reviewed is None:
        raise ValueError("a stored exception has created_at")
    return reviewed + record.review_interval


def status_at(record: ApiKeyException, now: datetime) -> Status:
    if record.state is State.REVOKED:
        return Status.REVOKED
    if record.state is State.SUSPENDED:
        return Status.SUSPENDED
    if now >= record.expires_at:
        return Status.EXPIRED
    if record.created_at is not None and now > review_due(record):
        return Status.REVIEW_OVERDUE
    return Status.ACTIVE


def check_secret(secret: bytes) -> str:
    """``secret`` as the text to inject; ValueError (never echoing it) if it is empty, too large, not printable
    ASCII, or would break out of its header or query parameter."""
    if not secret:
        raise ValueError("the secret is empty")
    if len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"the secret is larger than {MAX_SECRET_BYTES} bytes")
    text = secret.decode("ascii", errors="replace")
    if not _PRINTABLE.fullmatch(text):
        raise ValueError("the secret must be printable ASCII (no CR, LF, NUL or other control characters)")
    if text.startswith(PLACEHOLDER_PREFIX):
        raise ValueError("the secret is a placeholder, not a key")
    return text


def check_exception(record: ApiKeyException) -> ApiKeyException:
    """``record`` if valid; ValueError naming the first problem otherwise."""
    if not _NAME.fullmatch(record.name):
        raise ValueError("name must be 1-63 lower-case letters, digits and inner hyphens (a DNS label)")
    _check_target(record.target)
    if not _PRINTABLE.fullmatch(record.owner) or len(record.owner) > 128:
        raise ValueError("owner (the team) is required: 1-128 printable characters")
    if not _CONTACT.fullmatch(record.contact) or len(record.contact) > 254:
        raise ValueError("contact must be an e-mail address (local@domain.tld)")
    if len(record.justification.strip()) < 10 or len(record.justification) > 2000:
        raise ValueError("justification is required: 10-2000 characters saying why a key is still needed")
    if not _PRINTABLE.fullmatch(record.ticket) or len(record.ticket) > 128:
        raise ValueError("ticket (the external reference) is required: 1-128 printable characters")
    if record.review_interval < timedelta(days=1):
        raise ValueError("review_interval must be at least one day")
    if not record.allowed:
        raise ValueError("allowed must name at least one SPIFFE ID or prefix (spiffe://td/path or .../path/*)")
    _check_presentation(record.presentation)
    for stamp in (record.expires_at, record.last_review_at, record.created_at, record.updated_at):
        if stamp is not None and (stamp.tzinfo is None or stamp.utcoffset() is None):
            raise ValueError("times must be timezone-aware")
    if record.created_at is not None and record.expires_at <= record.created_at:
        raise ValueError("expires_at must be after created_at")
    if record.current_version < 0 or record.revision < 0:
        raise ValueError("current_version and revision are not negative")
    return record


def _check_target(target: Target) -> None:
    if target.scheme != "https":
        raise ValueError("target scheme must be https: a key is never sent in clear text")
    if not 1 <= target.port <= 65535:
        raise ValueError("target port must be 1-65535")
    if (
        not target.path_prefix.startswith("/")
        or not _PRINTABLE.fullmatch(target.path_prefix)
        or any(c in target.path_prefix for c in " ?#")
    ):
        raise ValueError("target path_prefix must start with / and hold no spaces, query or fragment")
    host = target.host
    if target.wildcard_host:
        if not host.startswith("*."):
            raise ValueError("a wildcard target host has the form *.example.com")
        host = host[2:]
    labels = host.split(".")
    if host != host.lower() or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("target host must be an exact lower-case DNS name (no wildcard unless opted in)")
    if len(labels) < 2 and host != "localhost":
        raise ValueError("target host must be a fully qualified DNS name")


def _check_presentation(presentation: Presentation) -> None:
    if presentation.kind == "header":
        if not _HEADER_NAME.fullmatch(presentation.name) or presentation.name.lower() in _RESERVED_HEADERS:
            raise ValueError("header name must be an RFC 9110 field name and not a hop-by-hop or framing header")
    elif presentation.kind == "query":
        if not _QUERY_NAME.fullmatch(presentation.name):
            raise ValueError("query parameter name must be unreserved characters (RFC 3986 §2.3)")
    else:
        raise ValueError("presentation kind must be header or query")
    if presentation.template.count(SECRET_SLOT) != 1:
        raise ValueError("presentation template must hold {secret} exactly once")
    if not _PRINTABLE.fullmatch(presentation.template) or len(presentation.template) > 256:
        raise ValueError("presentation template must be printable ASCII (no CR or LF) and at most 256 characters")
