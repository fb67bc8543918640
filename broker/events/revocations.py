"""The revocation log: what the token service has cut off, in the order it happened (issue 10).

One append-only log per store, each entry with a gap-free sequence number (``seq``, 1, 2, 3, ... in commit order).
Five kinds of entry, and only these, travel on the revocation feed to verifiers and sidecars:

* :class:`TokenRevoked`: one access token, by ``jti`` (RFC 7519 §4.1.7), until its ``exp``;
* :class:`SubjectQuarantined`: a SPIFFE ID or every ID under a path prefix (:class:`SubjectPattern`). While the
  quarantine holds (until released, or until ``until``), no token is issued to a matching subject and no token
  of one is accepted. Every token of a matching subject issued at or before ``at`` stays revoked until
  ``cutoff_until`` (``at`` + the longest token lifetime any policy may allow + leeway), released or not: releasing a
  quarantine does not revive the tokens it revoked, including tokens the issuance ledger has not recorded yet.
  A second quarantine of the same pattern before its release never shortens the one in force (the later
  ``until`` holds; release and quarantine again to shorten it): a store keeps each quarantine's entry until it
  is released or over, so a follower that starts from a snapshot must reach the same answer;
* :class:`SubjectReleased`: the quarantine of exactly this pattern ends (its cutoff stays);
* :class:`KeyRevoked`: a signing key (``kid``, RFC 7515 §4.1.4); every token it signed is refused;
* :class:`ExceptionWithdrawn`: an API-key exception revoked or suspended; sidecars drop its secret.

:class:`RevocationIndex` applies entries in ``seq`` order and answers "is this token or subject cut off?". The
token service, ``broker.verify`` and the sidecar all keep one, fed from the store or from the feed, so there is
one implementation of the rules. Its checks are dictionary lookups (a subject's ancestors, not a scan of the
patterns), so a verifier pays the same per token with ten quarantines or ten thousand revoked tokens.

:func:`entry_to_wire` / :func:`entry_from_wire` are the feed's JSON form of an entry. A quarantine's ``reason``
never goes on the wire: followers need the effect, not the operator's words (those are in the audit journal).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId

__all__ = [
    "ExceptionWithdrawn",
    "KeyRevoked",
    "LogEntry",
    "RevocationEvent",
    "RevocationIndex",
    "SubjectPattern",
    "SubjectQuarantined",
    "SubjectReleased",
    "TokenRevoked",
    "entry_from_wire",
    "entry_to_wire",
    "kept_until",
    "subject_keys",
]

_JTI = re.compile(r"[\x21-\x7e]{1,256}")
_KID = re.compile(r"[\x21-\x7e]{1,256}")
_EXCEPTION_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class SubjectPattern:
    """``spiffe://td/path`` (that ID only) or ``spiffe://td/path/*`` (every ID under ``path/``, not ``path`` itself).

    ``spiffe://td/*`` matches every ID of the trust domain; :meth:`parse` refuses it unless
    ``all_of_trust_domain`` is given, so a typo cannot quarantine a whole trust domain.
    """

    text: str

    @classmethod
    def parse(cls, value: str, *, all_of_trust_domain: bool = False) -> SubjectPattern:
        """ValueError (naming what is wrong) for anything that is not one of the three shapes."""
        try:
            return cls._parse(value, all_of_trust_domain=all_of_trust_domain)
        except InvalidSpiffeIdError as exc:
            raise ValueError(f"not a SPIFFE ID or a SPIFFE ID prefix ending in /*: {exc}") from None

    @classmethod
    def _parse(cls, value: str, *, all_of_trust_domain: bool) -> SubjectPattern:
        if not value.endswith("/*"):
            return cls(str(SpiffeId.parse(value)))
        base = SpiffeId.parse(value[:-2])  # so "spiffe:/*", "spiffe://*", "td/*" and "spiffe://td//*" are refused
        if not base.path and not all_of_trust_domain:
            raise ValueError(
                f"{value!r} matches every SPIFFE ID of trust domain {base.trust_domain}: "
                "pass --all-of-trust-domain if that is meant"
            )
        return cls(f"{base}/*")

    @property
    def is_prefix(self) -> bool:
        return self.text.endswith("/*")

    @property
    def key(self) -> str:
        """What :func:`subject_keys` yields for the IDs this pattern matches: the ID, or the prefix with ``/``."""
        return self.text[:-1] if self.is_prefix else self.text

    def matches(self, subject: str) -> bool:
        return self.key in subject_keys(subject)

    def __str__(self) -> str:
        return self.text


def subject_keys(subject: str) -> Iterable[str]:
    """The pattern keys that match ``subject``: itself, then each ancestor prefix ending in ``/``.

    ``spiffe://td/a/b`` -> ``spiffe://td/a/b``, ``spiffe://td/a/``, ``spiffe://td/``.
    """
    yield subject
    end = len(subject)
    floor = subject.find("/", len("spiffe://"))
    while floor != -1:
        end = subject.rfind("/", 0, end)
        if end < floor:
            return
        yield subject[: end + 1]


@dataclass(frozen=True, slots=True)
class TokenRevoked:
    jti: str
    expires_at: datetime

    def __post_init__(self) -> None:
        if not _JTI.fullmatch(self.jti):
            raise ValueError("a jti is 1-256 visible ASCII characters")


@dataclass(frozen=True, slots=True)
class SubjectQuarantined:
    pattern: SubjectPattern
    at: datetime
    until: datetime | None
    cutoff_until: datetime
    reason: str = ""  # kept in the store and the audit journal, never on the feed

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class SubjectReleased:
    pattern: SubjectPattern
    at: datetime


@dataclass(frozen=True, slots=True)
class KeyRevoked:
    kid: str
    expires_at: datetime

    def __post_init__(self) -> None:
        if not _KID.fullmatch(self.kid):
            raise ValueError("a kid is 1-256 visible ASCII characters")


@dataclass(frozen=True, slots=True)
class ExceptionWithdrawn:
    """The API-key exception ``name`` was revoked or suspended at ``at`` (issue 12): every sidecar drops what it
    holds of it that the token service granted at or before ``at``. Kept until ``until`` (``at`` plus the longest
    time a sidecar may hold a granted secret), since a later grant is checked by the token service afresh."""

    name: str
    at: datetime
    until: datetime

    def __post_init__(self) -> None:
        if not _EXCEPTION_NAME.fullmatch(self.name):
            raise ValueError("an exception name is a DNS label (1-63 lower-case letters, digits, inner hyphens)")


RevocationEvent = TokenRevoked | SubjectQuarantined | SubjectReleased | KeyRevoked | ExceptionWithdrawn


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the log: its sequence number and what it says."""

    seq: int
    event: RevocationEvent


def kept_until(event: RevocationEvent) -> datetime | None:
    """How long a store keeps ``event``'s entry when it is appended (None: until released).

    A release is kept as long as the latest ``cutoff_until`` of the quarantines it ends, which only the store
    knows; this gives its own time, the floor of that.
    """
    if isinstance(event, TokenRevoked | KeyRevoked):
        return event.expires_at
    if isinstance(event, SubjectQuarantined):
        return None if event.until is None else max(event.until, event.cutoff_until)
    if isinstance(event, ExceptionWithdrawn):
        return event.until
    return event.at


class RevocationIndex:
    """The state the log describes, for fast checks. Apply entries in ``seq`` order; :meth:`reset` for a snapshot."""

    def __init__(self) -> None:
        self.seq = 0
        self._tokens: dict[str, datetime] = {}
        self._keys: dict[str, datetime] = {}
        self._quarantines: dict[str, SubjectQuarantined] = {}  # by pattern key
        self._cutoffs: dict[str, list[tuple[datetime, datetime]]] = {}  # pattern key -> [(at, cutoff_until)]
        self._withdrawn: dict[str, ExceptionWithdrawn] = {}  # API-key exception name -> its latest withdrawal
        self.applied: dict[str, int] = {}  # entries applied one by one since this index was made, by kind

    def reset(self, entries: Iterable[LogEntry], seq: int) -> None:
        """Replace everything by ``entries`` (a snapshot taken at ``seq``; not counted in :attr:`applied`)."""
        applied = self.applied
        self.__init__()  # type: ignore[misc]
        for entry in entries:
            self.apply(entry)
        self.seq = seq
        self.applied = applied

    def apply(self, entry: LogEntry) -> None:
        """Apply ``entry``; one at or below :attr:`seq` was already applied (a redelivery) and changes nothing."""
        if entry.seq <= self.seq:
            return
        event = entry.event
        kind = _KINDS.get(type(event), "release")
        self.applied[kind] = self.applied.get(kind, 0) + 1
        if isinstance(event, TokenRevoked):
            self._tokens[event.jti] = event.expires_at
        elif isinstance(event, KeyRevoked):
            self._keys[event.kid] = event.expires_at
        elif isinstance(event, SubjectQuarantined):
            held = self._quarantines.get(event.pattern.key)
            if held is None or not _ends_later(held, event):
                self._quarantines[event.pattern.key] = event
            else:  # the longer quarantine stands, since it began; the later add's reason is the one shown
                self._quarantines[event.pattern.key] = replace(held, reason=event.reason)
            self._cutoffs.setdefault(event.pattern.key, []).append((event.at, event.cutoff_until))
        elif isinstance(event, ExceptionWithdrawn):
            held_withdrawal = self._withdrawn.get(event.name)
            if held_withdrawal is None or held_withdrawal.at <= event.at:
                self._withdrawn[event.name] = event
        else:
            self._quarantines.pop(event.pattern.key, None)
        self.seq = max(self.seq, entry.seq)

    def quarantine_of(self, subject: str, now: datetime) -> SubjectQuarantined | None:
        """The quarantine in force for ``subject`` at ``now``, if any."""
        for key in subject_keys(subject):
            found = self._quarantines.get(key)
            if found is not None and found.active(now):
                return found
        return None

    def refusal(
        self, *, jti: str | None, kid: str | None, subject: str, issued_at: datetime, now: datetime
    ) -> str | None:
        """Why a token is cut off at ``now``: ``revoked``, ``key_revoked``, ``quarantined``, or None."""
        if jti is not None and jti in self._tokens:
            return "revoked"
        if kid is not None and kid in self._keys:
            return "key_revoked"
        for key in subject_keys(subject):
            found = self._quarantines.get(key)
            if found is not None and found.active(now):
                return "quarantined"
            for at, cutoff_until in self._cutoffs.get(key, ()):
                if issued_at <= at and now < cutoff_until:
                    return "quarantined"
        return None

    def withdrawn_at(self, name: str) -> datetime | None:
        """When the API-key exception ``name`` was last revoked or suspended, while that is kept; else None. A
        secret granted at or before this time must not be used again."""
        found = self._withdrawn.get(name)
        return None if found is None else found.at

    def quarantines(self, now: datetime) -> list[SubjectQuarantined]:
        return sorted((q for q in self._quarantines.values() if q.active(now)), key=lambda q: q.pattern.text)

    def prune(self, now: datetime) -> None:
        """Forget what no longer cuts anything off: expired tokens and keys, ended cutoffs and quarantines."""
        self._tokens = {jti: exp for jti, exp in self._tokens.items() if exp > now}
        self._keys = {kid: exp for kid, exp in self._keys.items() if exp > now}
        self._quarantines = {k: q for k, q in self._quarantines.items() if q.active(now)}
        cutoffs = {k: [c for c in cs if c[1] > now] for k, cs in self._cutoffs.items()}
        self._cutoffs = {k: cs for k, cs in cutoffs.items() if cs}
        self._withdrawn = {name: w for name, w in self._withdrawn.items() if w.until > now}

    def __len__(self) -> int:
        cutoffs = sum(map(len, self._cutoffs.values()))
        return len(self._tokens) + len(self._keys) + len(self._quarantines) + cutoffs + len(self._withdrawn)


_KINDS: dict[type, str] = {
    TokenRevoked: "token",
    KeyRevoked: "key",
    SubjectQuarantined: "subject",
    ExceptionWithdrawn: "exception",
}


def _ends_later(held: SubjectQuarantined, new: SubjectQuarantined) -> bool:
    """True if ``held`` lasts longer than ``new``: a second quarantine of a pattern never shortens the first."""
    if held.until is None:
        return new.until is not None
    return new.until is not None and held.until > new.until


def _ts(at: datetime) -> int:
    """Whole seconds, rounded up: a cutoff, an expiry or a quarantine's start may move later on the wire, never
    earlier, so a follower never stops refusing before the store does (fail closed)."""
    return math.ceil(at.timestamp())


_LATEST = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds


def _at(value: Any, name: str) -> datetime:
    if type(value) is not int or not 0 <= value <= _LATEST:
        raise ValueError(f"{name} is an integer from 0 to {_LATEST} (seconds since the epoch)")
    return datetime.fromtimestamp(value, UTC)


def entry_to_wire(entry: LogEntry) -> dict[str, Any]:
    """The feed's JSON object for ``entry`` (times in whole seconds since the epoch, as JWT NumericDate)."""
    event = entry.event
    if isinstance(event, TokenRevoked):
        return {"seq": entry.seq, "type": "token.revoked", "jti": event.jti, "exp": _ts(event.expires_at)}
    if isinstance(event, KeyRevoked):
        return {"seq": entry.seq, "type": "key.revoked", "kid": event.kid, "exp": _ts(event.expires_at)}
    if isinstance(event, SubjectQuarantined):
        return {
            "seq": entry.seq,
            "type": "subject.quarantined",
            "pattern": event.pattern.text,
            "at": _ts(event.at),
            "until": None if event.until is None else _ts(event.until),
            "cutoff_until": _ts(event.cutoff_until),
        }
    if isinstance(event, ExceptionWithdrawn):
        return {"seq": entry.seq, "type": "exception.withdrawn", "name": event.name, "at": _ts(event.at),
                "until": _ts(event.until)}  # fmt: skip
    return {"seq": entry.seq, "type": "subject.released", "pattern": event.pattern.text, "at": _ts(event.at)}


def entry_from_wire(obj: Mapping[str, Any]) -> LogEntry:
    """Parse one feed object; ValueError for anything that is not exactly an entry :func:`entry_to_wire` writes."""
    if not isinstance(obj, Mapping):
        raise ValueError("a revocation feed entry is a JSON object")
    seq = obj.get("seq")
    if type(seq) is not int or seq < 1:
        raise ValueError("seq is a positive integer")
    kind = obj.get("type")
    if kind == "token.revoked" and set(obj) == {"seq", "type", "jti", "exp"}:
        return LogEntry(seq, TokenRevoked(_text(obj["jti"]), _at(obj["exp"], "exp")))
    if kind == "key.revoked" and set(obj) == {"seq", "type", "kid", "exp"}:
        return LogEntry(seq, KeyRevoked(_text(obj["kid"]), _at(obj["exp"], "exp")))
    if kind == "subject.quarantined" and set(obj) == {"seq", "type", "pattern", "at", "until", "cutoff_until"}:
        until = None if obj["until"] is None else _at(obj["until"], "until")
        pattern = SubjectPattern.parse(_text(obj["pattern"]), all_of_trust_domain=True)
        return LogEntry(
            seq, SubjectQuarantined(pattern, _at(obj["at"], "at"), until, _at(obj["cutoff_until"], "cutoff_until"))
        )
    if kind == "subject.released" and set(obj) == {"seq", "type", "pattern", "at"}:
        pattern = SubjectPattern.parse(_text(obj["pattern"]), all_of_trust_domain=True)
        return LogEntry(seq, SubjectReleased(pattern, _at(obj["at"], "at")))
    if kind == "exception.withdrawn" and set(obj) == {"seq", "type", "name", "at", "until"}:
        return LogEntry(seq, ExceptionWithdrawn(_text(obj["name"]), _at(obj["at"], "at"), _at(obj["until"], "until")))
    raise ValueError("not a revocation feed entry")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value
