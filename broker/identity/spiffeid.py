"""SPIFFE IDs and trust domains, parsed exactly as the SPIFFE-ID standard writes them.

Rules (SPIFFE-ID standard §2, §2.1, §2.2, §2.3):

* the scheme is ``spiffe`` in lowercase, followed by ``://``;
* the trust domain is one or more of ``a-z 0-9 . - _`` (lowercase only; so no port, no userinfo, no
  percent-encoding), at most 255 bytes;
* the path is zero or more segments ``/seg``, each of ``a-z A-Z 0-9 . - _``, never empty, never ``.`` or
  ``..``; no trailing slash; no query, fragment or percent-encoding;
* the whole ID is at most 2048 bytes;
* nothing follows the last character (the whole string is matched with ``re.fullmatch``, so a trailing newline
  is an error, unlike py-spiffe 0.3.2 which uses ``re.match(...$)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.identity.errors import InvalidSpiffeIdError

__all__ = ["MAX_SPIFFE_ID_BYTES", "MAX_TRUST_DOMAIN_BYTES", "SpiffeId", "TrustDomain"]

SCHEME_PREFIX = "spiffe://"
MAX_TRUST_DOMAIN_BYTES = 255
MAX_SPIFFE_ID_BYTES = 2048

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")


def _utf8_length(value: str) -> int:
    """Length in UTF-8 bytes. A lone surrogate (``"\\ud800"`` from JSON or YAML) counts as its three bytes instead
    of raising ``UnicodeEncodeError``: no rule allows it, so the character checks then refuse it."""
    return len(value.encode("utf-8", "surrogatepass"))


def _check_trust_domain_name(name: str) -> None:
    if not name:
        raise InvalidSpiffeIdError("trust domain is missing")
    if _utf8_length(name) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeIdError(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if not _TRUST_DOMAIN.fullmatch(name):
        raise InvalidSpiffeIdError(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
        )


def _check_path(path: str) -> None:
    """SPIFFE-ID §2.2: path segments are non-empty, not ``.``/``..``, of the allowed characters."""
    if path == "":
        return
    if not path.startswith("/"):
        raise InvalidSpiffeIdError("path must start with a slash")
    if path.endswith("/"):
        raise InvalidSpiffeIdError("path cannot have a trailing slash")
    for segment in path[1:].split("/"):
        if segment == "":
            raise InvalidSpiffeIdError("path cannot contain empty segments")
        if segment in (".", ".."):
            raise InvalidSpiffeIdError("path cannot contain dot segments")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidSpiffeIdError(
                "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
            )


def _split_id(value: str) -> tuple[str, str]:
    if not value:
        raise InvalidSpiffeIdError("SPIFFE ID is empty")
    if _utf8_length(value) > MAX_SPIFFE_ID_BYTES:
        raise InvalidSpiffeIdError(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")
    if not value.startswith(SCHEME_PREFIX):
        raise InvalidSpiffeIdError("scheme is missing or invalid (must be lowercase 'spiffe://')")
    rest = value[len(SCHEME_PREFIX) :]
    slash = rest.find("/")
    if slash < 0:
        return rest, ""
    return rest[:slash], rest[slash:]


@dataclass(frozen=True, slots=True, order=True)
class TrustDomain:
    """A SPIFFE trust domain name such as ``example.org`` (SPIFFE-ID §2.1)."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain_name(self.name)

    @classmethod
    def parse(cls, value: str) -> TrustDomain:
        """Parse ``example.org`` or ``spiffe://example.org`` (a trust domain's SPIFFE ID, no path)."""
        if "://" in value or value.startswith("spiffe:"):
            spiffe_id = SpiffeId.parse(value)
            if spiffe_id.path:
                raise InvalidSpiffeIdError("a trust domain ID has no path")
            return spiffe_id.trust_domain
        return cls(value)

    def id_string(self) -> str:
        """The trust domain's SPIFFE ID, ``spiffe://<name>``: the key of bundle maps in the Workload API."""
        return SCHEME_PREFIX + self.name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, order=True)
class SpiffeId:
    """A SPIFFE ID: trust domain plus path (SPIFFE-ID §2)."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        _check_path(self.path)
        if _utf8_length(str(self)) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeIdError(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse a SPIFFE ID string; raise :class:`InvalidSpiffeIdError` naming the rule it breaks."""
        name, path = _split_id(value)
        return cls(TrustDomain(name), path)

    @classmethod
    def from_parts(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        return cls(td, path)

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        return self.trust_domain == trust_domain

    def has_path_prefix(self, prefix: str) -> bool:
        """True if the path equals ``prefix`` or continues it at a segment boundary."""
        prefix = prefix.rstrip("/")
        return prefix == "" or self.path == prefix or self.path.startswith(prefix + "/")

    def __str__(self) -> str:
        return SCHEME_PREFIX + self.trust_domain.name + self.path
