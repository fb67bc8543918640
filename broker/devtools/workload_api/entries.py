"""Registration entries of the dev Workload API: which callers get which SPIFFE IDs.

An entry names a SPIFFE ID and the selectors a caller must present to get it; it matches a caller when *all* of
its selectors match (SPIRE's default ``MATCH_EXACT`` subset rule for workload entries). Only SPIRE's ``unix``
workload-attestor selectors ``unix:uid:N`` and ``unix:gid:N`` exist here: the caller's effective uid and gid as
the kernel reports them for the socket (``SO_PEERCRED``). An entry without selectors, or with one we cannot
evaluate, is refused when the file is read (fail closed) instead of silently matching nobody or everybody.

The entries file is YAML::

    entries:
      - spiffe_id: spiffe://example.org/ns/shop/sa/web
        selectors: [unix:uid:1000]
        x509_svid_ttl: 60        # seconds; omitted: the server's default
        jwt_svid_ttl: 300        # seconds
        dns_names: []
        hint: ""                 # optional; SPIFFE Workload API ``hint``

:class:`FileEntryStore` re-reads the file whenever its inode, size or mtime change. A file that no longer parses
yields *no* entries (and an error in the log) until it is fixed: a broken edit must not keep granting identities
the edit meant to remove.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard, runtime_checkable

import yaml

from broker import _yaml
from broker._files import Watched, write_private_file
from broker.errors import ConfigError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId

__all__ = [
    "DEFAULT_JWT_SVID_TTL",
    "EntryStore",
    "FileEntryStore",
    "InMemoryEntryStore",
    "RegistrationEntry",
    "RegistrationEntryError",
    "Selector",
    "dump_entries",
    "parse_entries",
]

log = logging.getLogger(__name__)

DEFAULT_JWT_SVID_TTL = 300.0  # SPIRE's default JWT-SVID TTL (5 minutes)
_SELECTOR = re.compile(r"unix:(uid|gid):(0|[1-9][0-9]{0,9})")
_DNS_NAME = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
MAX_HINT_BYTES = 1024  # SPIFFE Workload API §5.3: hints over 1024 bytes SHOULD NOT be supported
_ENTRY_KEYS = frozenset({"spiffe_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names", "hint"})
_MAX_ID = 2**32 - 1
MAX_SVID_TTL = 2**31 - 1  # seconds: SPIRE's entry TTL fields are int32
MAX_ENTRIES_FILE_BYTES = 1024 * 1024


class RegistrationEntryError(ConfigError):
    """A registration entry or entries file is invalid; the message names the entry and field."""

    error = "invalid_registration_entry"


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """One ``unix`` workload selector: ``unix:uid:N`` or ``unix:gid:N``."""

    kind: Literal["uid", "gid"]
    value: int

    @classmethod
    def parse(cls, text: str) -> Selector:
        match = _SELECTOR.fullmatch(text)
        if match is None or int(match.group(2)) > _MAX_ID:
            raise RegistrationEntryError(f"unsupported selector {text!r} (expected unix:uid:N or unix:gid:N)")
        kind: Literal["uid", "gid"] = "uid" if match.group(1) == "uid" else "gid"
        return cls(kind, int(match.group(2)))

    def __str__(self) -> str:
        return f"unix:{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class RegistrationEntry:
    """A SPIFFE ID and the selectors that entitle a caller to it, with the SVID lifetimes to issue."""

    spiffe_id: SpiffeId
    selectors: frozenset[Selector]
    x509_svid_ttl: float | None = None
    jwt_svid_ttl: float = DEFAULT_JWT_SVID_TTL
    dns_names: tuple[str, ...] = ()
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.spiffe_id.path:
            raise RegistrationEntryError(f"{self.spiffe_id}: a workload SPIFFE ID needs a path")
        if not self.selectors:
            raise RegistrationEntryError(f"{self.spiffe_id}: an entry needs at least one selector")
        for name in ("x509_svid_ttl", "jwt_svid_ttl"):
            ttl = getattr(self, name)
            if ttl is not None and not 0 < ttl <= MAX_SVID_TTL:  # NaN and infinity fail too
                raise RegistrationEntryError(f"{self.spiffe_id}: {name} must be 0 < seconds <= {MAX_SVID_TTL}")
        if not _yaml.is_unicode(self.hint):
            raise RegistrationEntryError(f"{self.spiffe_id}: hint is not valid Unicode (a lone surrogate)")
        if len(self.hint.encode()) > MAX_HINT_BYTES:
            raise RegistrationEntryError(f"{self.spiffe_id}: hint is longer than {MAX_HINT_BYTES} bytes")
        for dns_name in self.dns_names:
            if len(dns_name) > 253 or not _DNS_NAME.fullmatch(dns_name):
                raise RegistrationEntryError(f"{self.spiffe_id}: invalid DNS name {dns_name!r}")

    @classmethod
    def of(
        cls,
        spiffe_id: SpiffeId | str,
        selectors: Iterable[Selector | str],
        *,
        x509_svid_ttl: float | None = None,
        jwt_svid_ttl: float = DEFAULT_JWT_SVID_TTL,
        dns_names: Sequence[str] = (),
        hint: str = "",
    ) -> RegistrationEntry:
        """Build an entry from strings: ``RegistrationEntry.of("spiffe://td/app", ["unix:uid:1000"])``."""
        try:
            sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        except InvalidSpiffeIdError as exc:
            raise RegistrationEntryError(f"invalid spiffe_id: {exc.description}") from None
        parsed = frozenset(s if isinstance(s, Selector) else Selector.parse(s) for s in selectors)
        return cls(sid, parsed, x509_svid_ttl, jwt_svid_ttl, tuple(dns_names), hint)

    def matches(self, caller_selectors: frozenset[Selector]) -> bool:
        """True when every selector of the entry is among the caller's (SPIRE's subset match)."""
        return self.selectors <= caller_selectors

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "spiffe_id": str(self.spiffe_id),
            "selectors": [str(s) for s in sorted(self.selectors)],
            "jwt_svid_ttl": self.jwt_svid_ttl,
            "dns_names": list(self.dns_names),
        }
        if self.x509_svid_ttl is not None:
            data["x509_svid_ttl"] = self.x509_svid_ttl
        if self.hint:
            data["hint"] = self.hint
        return data


@runtime_checkable
class EntryStore(Protocol):
    """Where the server reads registration entries; called on every poll, so it must be cheap."""

    def entries(self) -> tuple[RegistrationEntry, ...]: ...


class InMemoryEntryStore:
    """An :class:`EntryStore` held in memory; ``set``/``add`` change it (the server notices on its next poll)."""

    def __init__(self, entries: Iterable[RegistrationEntry] = ()) -> None:
        self._entries = tuple(entries)

    def entries(self) -> tuple[RegistrationEntry, ...]:
        return self._entries

    def set(self, entries: Iterable[RegistrationEntry]) -> None:
        self._entries = tuple(entries)

    def add(self, entry: RegistrationEntry) -> None:
        self._entries = (*self._entries, entry)


class FileEntryStore:
    """Entries read from a YAML file, re-read when the file changes; a missing file means no entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = Watched((path,), self._read)
        self._entries: tuple[RegistrationEntry, ...] = ()
        self._load(strict=True)

    def entries(self) -> tuple[RegistrationEntry, ...]:
        if self._file.changed():
            self._load(strict=False)
        return self._entries

    def upsert(self, entry: RegistrationEntry) -> None:
        """Add ``entry`` to the file, replacing one with the same SPIFFE ID and selectors; written 0600."""
        self._load(strict=True)
        key = (entry.spiffe_id, entry.selectors)
        entries = [entry if (e.spiffe_id, e.selectors) == key else e for e in self._entries]
        if entry not in entries:
            entries.append(entry)
        write_private_file(self.path, dump_entries(entries))
        self._load(strict=True)

    def _read(self) -> tuple[RegistrationEntry, ...]:
        try:
            data = _read_bounded(self.path)
        except FileNotFoundError:
            data = b""  # a missing file means no entries
        except OSError as exc:
            raise RegistrationEntryError(f"{self.path}: cannot read: {exc.strerror}") from None
        return parse_entries(data, source=str(self.path))

    def _load(self, *, strict: bool) -> None:
        try:
            entries = self._file.reload()
        except RegistrationEntryError as exc:
            if strict:
                raise
            log.error("serving no entries until the entries file is fixed: %s", exc.description)
            entries = ()
        if entries != self._entries:
            log.info("registration entries loaded from %s: %d entries", self.path, len(entries))
        self._entries = entries


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_ENTRIES_FILE_BYTES + 1)
    if len(data) > MAX_ENTRIES_FILE_BYTES:
        raise RegistrationEntryError(f"{path}: the entries file is larger than {MAX_ENTRIES_FILE_BYTES} bytes")
    return data


def parse_entries(data: bytes | str, *, source: str = "entries") -> tuple[RegistrationEntry, ...]:
    """Parse an entries YAML document (``entries: [...]``); unknown or repeated keys are errors.

    Every failure is a :class:`RegistrationEntryError`: the text is read by :mod:`broker._yaml` (size and depth
    bounded, no aliases, no duplicate keys, explicit tags that do not construct refused).
    """
    try:
        return _parse_entries(data, source)
    except RegistrationEntryError:
        raise
    except Exception as exc:  # defence in depth: nothing but our own error may reach the Workload API
        raise RegistrationEntryError(f"{source}: entries file could not be parsed ({type(exc).__name__})") from None


def _parse_entries(data: bytes | str, source: str) -> tuple[RegistrationEntry, ...]:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise RegistrationEntryError(f"{source}: not UTF-8") from None
    try:
        document = _yaml.load(text, max_chars=MAX_ENTRIES_FILE_BYTES)
    except _yaml.YamlError as exc:
        where = f"{source}:{exc.line}" if exc.line is not None else source
        raise RegistrationEntryError(f"{where}: not valid YAML: {exc.problem}") from None
    if document is None:
        return ()
    if not isinstance(document, Mapping) or set(document) - {"entries"}:
        raise RegistrationEntryError(f"{source}: the document must be a mapping with one key, 'entries'")
    items = document.get("entries")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise RegistrationEntryError(f"{source}: 'entries' must be a list")
    entries = tuple(_parse_entry(item, f"{source}: entries[{index}]") for index, item in enumerate(items))
    keys = [(entry.spiffe_id, entry.selectors) for entry in entries]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise RegistrationEntryError(f"{source}: entries[{index}] repeats the SPIFFE ID and selectors of another")
    return entries


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) and _yaml.is_unicode(item) for item in value)


def _parse_entry(item: object, where: str) -> RegistrationEntry:
    if not isinstance(item, Mapping):
        raise RegistrationEntryError(f"{where}: an entry must be a mapping")
    unknown = set(item) - _ENTRY_KEYS
    if unknown:
        raise RegistrationEntryError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    spiffe_id, selectors = item.get("spiffe_id"), item.get("selectors")
    dns_names, hint = item.get("dns_names", []), item.get("hint", "")
    dns_names = [] if dns_names is None else dns_names
    x509_ttl = item.get("x509_svid_ttl")
    if not isinstance(spiffe_id, str):
        raise RegistrationEntryError(f"{where}: 'spiffe_id' must be a string")
    if not _strings(selectors):
        raise RegistrationEntryError(f"{where}: 'selectors' must be a list of strings")
    if not _strings(dns_names):
        raise RegistrationEntryError(f"{where}: 'dns_names' must be a list of strings")
    if not isinstance(hint, str):
        raise RegistrationEntryError(f"{where}: 'hint' must be a string")
    try:
        return RegistrationEntry.of(
            spiffe_id,
            selectors,
            x509_svid_ttl=None if x509_ttl is None else _ttl(x509_ttl, "x509_svid_ttl", where),
            jwt_svid_ttl=_ttl(item.get("jwt_svid_ttl", DEFAULT_JWT_SVID_TTL), "jwt_svid_ttl", where),
            dns_names=dns_names,
            hint=hint,
        )
    except RegistrationEntryError as exc:
        raise RegistrationEntryError(f"{where}: {exc.description}") from None


def _ttl(value: object, name: str, where: str) -> float:
    """A positive, finite number of seconds no larger than SPIRE's int32 TTL fields (as ``workloads.yaml``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SVID_TTL:
        raise RegistrationEntryError(f"{where}: '{name}' must be a positive number of seconds up to {MAX_SVID_TTL}")
    return float(value)


def dump_entries(entries: Iterable[RegistrationEntry]) -> bytes:
    """Serialise entries to the YAML the file store reads."""
    document = {"entries": [entry.to_dict() for entry in entries]}
    return yaml.safe_dump(document, sort_keys=False).encode()
