"""RFC 8414 authorization server metadata: where to find it and what to trust in it.

§2: the issuer is an ``https`` URL with no query or fragment. §3.1: the metadata lives at the issuer with
``/.well-known/oauth-authorization-server`` inserted between the host and the path (a terminating ``/`` of the
path removed first). §3.3: the ``issuer`` in the document MUST be identical to the issuer it was fetched for,
otherwise the document MUST NOT be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from broker.errors import ConfigError

__all__ = ["WELL_KNOWN", "AuthorizationServerMetadata", "MetadataError", "check_issuer", "metadata_url"]

WELL_KNOWN = "/.well-known/oauth-authorization-server"


class MetadataError(ValueError):
    """The metadata document is unusable (wrong issuer, missing or non-https endpoint)."""


def check_issuer(issuer: str) -> str:
    """RFC 8414 §2: an ``https`` URL with a host and no query or fragment."""
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or "?" in issuer:
        raise ConfigError(f"issuer {issuer!r} must be an https URL without query or fragment (RFC 8414 §2)")
    if "#" in issuer or parts.username or parts.password:
        raise ConfigError(f"issuer {issuer!r} must not carry a fragment or credentials")
    return issuer  # RFC 8414 §3.3: compared as configured, character for character


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
