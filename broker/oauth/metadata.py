"""RFC 8414 authorization server metadata: the one issuer rule, where the document lives and what to trust in it.

§2: the issuer is an ``https`` URL with no query or fragment. §3.1: the metadata lives at the issuer with
``/.well-known/oauth-authorization-server`` inserted between the host and the path (a terminating ``/`` of the
path removed first). §3.3: the ``issuer`` in the document MUST be identical to the issuer it was fetched for,
otherwise the document MUST NOT be used.

One rule (:func:`issuer_problem`) with one switch: the token service's own issuer must be an origin
(``https://host[:port]``, normalised by :func:`normalize_issuer`, since the service serves its endpoints at the
root), while a client (:func:`check_issuer`) accepts any RFC 8414 §2 issuer, path included, and compares it
character for character. Both refuse credentials in the URL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from broker.errors import BrokerError, ConfigError

__all__ = [
    "WELL_KNOWN",
    "AuthorizationServerMetadata",
    "IssuerProblem",
    "MetadataError",
    "check_issuer",
    "issuer_problem",
    "metadata_url",
    "normalize_issuer",
]

WELL_KNOWN = "/.well-known/oauth-authorization-server"


class MetadataError(BrokerError, ValueError):
    """The metadata document is unusable (wrong issuer, missing or non-https endpoint); still a ``ValueError``."""


class IssuerProblem(enum.Enum):
    """The first RFC 8414 §2 rule an issuer breaks, in the order they are checked."""

    NOT_HTTPS = "not an https URL with a host"
    QUERY = "has a query"
    FRAGMENT = "has a fragment"
    EMPTY_FRAGMENT = "has an empty fragment"
    CREDENTIALS = "carries credentials"
    PATH = "has a path"


def issuer_problem(issuer: str, *, origin_only: bool) -> IssuerProblem | None:
    """RFC 8414 §2: ``https``, a host, no query or fragment; no userinfo; no path when ``origin_only``."""
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname:
        return IssuerProblem.NOT_HTTPS
    if parts.query or "?" in issuer:
        return IssuerProblem.QUERY
    if parts.fragment:
        return IssuerProblem.FRAGMENT
    if "#" in issuer:
        return IssuerProblem.EMPTY_FRAGMENT
    if parts.username or parts.password:
        return IssuerProblem.CREDENTIALS
    if origin_only and parts.path not in ("", "/"):
        return IssuerProblem.PATH
    return None


_SERVER_MESSAGES = {
    IssuerProblem.NOT_HTTPS: "must be an https URL (RFC 8414 §2)",
    IssuerProblem.QUERY: "must not have a query or fragment (RFC 8414 §2)",
    IssuerProblem.FRAGMENT: "must not have a query or fragment (RFC 8414 §2)",
    IssuerProblem.EMPTY_FRAGMENT: "must not have a query or fragment (RFC 8414 §2)",
    IssuerProblem.CREDENTIALS: "must be just https://host[:port]",
    IssuerProblem.PATH: "must be just https://host[:port]",
}
_CLIENT_MESSAGES = {
    IssuerProblem.NOT_HTTPS: "must be an https URL without query or fragment (RFC 8414 §2)",
    IssuerProblem.QUERY: "must be an https URL without query or fragment (RFC 8414 §2)",
    IssuerProblem.FRAGMENT: "must be an https URL without query or fragment (RFC 8414 §2)",
    IssuerProblem.EMPTY_FRAGMENT: "must not carry a fragment or credentials",
    IssuerProblem.CREDENTIALS: "must not carry a fragment or credentials",
}


def normalize_issuer(issuer: str) -> str:
    """The token service's own issuer: an RFC 8414 §2 issuer that is an origin; returned as ``https://netloc``."""
    problem = issuer_problem(issuer, origin_only=True)
    if problem is not None:
        raise ConfigError(f"issuer {issuer!r} {_SERVER_MESSAGES[problem]}")
    return f"https://{urlsplit(issuer).netloc}"


def check_issuer(issuer: str) -> str:
    """An issuer a client trusts: RFC 8414 §2 (a path allowed); returned unchanged (§3.3 compares it as is)."""
    problem = issuer_problem(issuer, origin_only=False)
    if problem is not None:
        raise ConfigError(f"issuer {issuer!r} {_CLIENT_MESSAGES[problem]}")
    return issuer


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: ``https://h/p`` -> ``https://h/.well-known/oauth-authorization-server/p``."""
    parts = urlsplit(check_issuer(issuer))
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + path, "", ""))


def _https_url(document: dict[str, object], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise MetadataError(f"metadata has no {name}")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.fragment:
        raise MetadataError(f"metadata {name} is not an https URL")
    return value


@dataclass(frozen=True)
class AuthorizationServerMetadata:
    """The parts of the metadata the broker's clients use."""

    issuer: str
    token_endpoint: str | None
    jwks_uri: str | None

    @classmethod
    def from_document(cls, document: object, *, issuer: str) -> AuthorizationServerMetadata:
        """Validate a fetched document for ``issuer`` (RFC 8414 §3.3: identical ``issuer`` or reject)."""
        if not isinstance(document, dict):
            raise MetadataError("metadata is not a JSON object")
        if document.get("issuer") != issuer:
            raise MetadataError("metadata issuer does not match the configured issuer (RFC 8414 §3.3)")
        token_endpoint = _https_url(document, "token_endpoint") if "token_endpoint" in document else None
        jwks_uri = _https_url(document, "jwks_uri") if "jwks_uri" in document else None
        return cls(issuer=issuer, token_endpoint=token_endpoint, jwks_uri=jwks_uri)
