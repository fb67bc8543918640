"""Tests for broker.oauth.metadata (RFC 8414 §2, §3.1, §3.3); the JWS tests moved to tests/unit/jose."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.oauth.metadata import AuthorizationServerMetadata, MetadataError, check_issuer, metadata_url


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://example.com", "https://example.com/.well-known/oauth-authorization-server"),
        ("https://example.com/", "https://example.com/.well-known/oauth-authorization-server"),
        ("https://example.com/issuer1", "https://example.com/.well-known/oauth-authorization-server/issuer1"),
        ("https://example.com/issuer1/", "https://example.com/.well-known/oauth-authorization-server/issuer1"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443/.well-known/oauth-authorization-server"),
    ],
    ids=["host-only", "root-slash", "rfc8414-3.1-example", "terminating-slash-removed", "with-port"],
)
def test_metadata_url_inserts_the_well_known_path_between_host_and_path(issuer: str, url: str) -> None:
    assert metadata_url(issuer) == url


@pytest.mark.parametrize(
    "issuer",
    ["http://example.com", "https://example.com?x=1", "https://example.com#f", "https://u:p@example.com", "https://"],
    ids=["http", "query", "fragment", "userinfo", "no-host"],
)
def test_issuer_must_be_https_without_query_fragment_or_credentials(issuer: str) -> None:
    with pytest.raises(ConfigError):
        check_issuer(issuer)


def test_metadata_for_another_issuer_is_not_used() -> None:
    document = {"issuer": "https://a.example", "token_endpoint": "https://a.example/token"}
    with pytest.raises(MetadataError, match=r"RFC 8414 §3\.3"):
        AuthorizationServerMetadata.from_document(document, issuer="https://b.example")
    parsed = AuthorizationServerMetadata.from_document(document, issuer="https://a.example")
    assert (parsed.token_endpoint, parsed.jwks_uri) == ("https://a.example/token", None)


@pytest.mark.parametrize("issuer", ["https://as.example/", "https://as.example/tenant/"], ids=["root", "path"])
def test_issuer_with_trailing_slash_matches_metadata_that_echoes_it(issuer: str) -> None:
    """RFC 8414 §3.3: the metadata's issuer must be identical to the configured one, trailing slash included."""

    document = {"issuer": issuer, "jwks_uri": "https://as.example/jwks", "token_endpoint": "https://as.example/t"}
    assert AuthorizationServerMetadata.from_document(document, issuer=check_issuer(issuer)).issuer == issuer
    assert metadata_url(issuer).startswith("https://as.example/.well-known/oauth-authorization-server")
