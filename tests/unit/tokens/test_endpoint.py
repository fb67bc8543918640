"""Tests for broker.tokens.endpoint: the registries, the request pipeline and its error precedence."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.devtools.devca import DevCA
from broker.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    OAuthError,
    UnsupportedGrantTypeError,
)
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from broker.oauth.form import single_values
from broker.tokens.client_auth import RequestContext
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.endpoint import QuarantinedError, TokenEndpoint
from broker.tokens.grants.client_credentials import ClientCredentialsGrant
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient, IssuedToken
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from tests.unit.tokens.endpoint_helpers import API, ISSUER, OTHER, POLICY, cc_form, exchange_form, jwt_svid


async def test_audience_and_resource_naming_same_target_are_one_target(
    endpoint: TokenEndpoint, client: AuthenticatedClient
) -> None:
    assert (await endpoint.handle(cc_form(resource=API), client)).token.audience == API


BAD_REQUESTS: list[tuple[str, Callable[[DevCA, AuthenticatedClient], dict[str, list[str]]], type[OAuthError]]] = [
    ("missing-grant-type", lambda ca, c: {"audience": [API]}, InvalidRequestError),
    ("unknown-grant-type", lambda ca, c: cc_form(grant_type="password"), UnsupportedGrantTypeError),
    ("repeated-grant-type", lambda ca, c: cc_form(grant_type=[GRANT_CLIENT_CREDENTIALS] * 2), InvalidRequestError),
    ("repeated-scope", lambda ca, c: cc_form(scope=["orders:read", "orders:read"]), InvalidRequestError),
    ("repeated-empty", lambda ca, c: cc_form(scope=["", ""]), InvalidRequestError),
    ("client-id-mismatch", lambda ca, c: cc_form(client_id=str(OTHER)), InvalidClientError),
    (
        "exchange-client-id-mismatch",
        lambda ca, c: exchange_form(jwt_svid(ca, c), client_id=str(OTHER)),
        InvalidClientError,
    ),
    ("missing-target", lambda ca, c: {"grant_type": [GRANT_CLIENT_CREDENTIALS]}, InvalidRequestError),
    ("empty-target", lambda ca, c: cc_form(audience=""), InvalidRequestError),
    ("two-audiences", lambda ca, c: cc_form(audience=[API, "https://b"]), InvalidTargetError),
    ("audience-resource-disagree", lambda ca, c: cc_form(resource="https://b"), InvalidTargetError),
    ("resource-not-absolute", lambda ca, c: cc_form(audience=[], resource="api"), InvalidTargetError),
    ("resource-with-fragment", lambda ca, c: cc_form(audience=[], resource=API + "#x"), InvalidTargetError),
    ("audience-outside-policy", lambda ca, c: cc_form(audience="https://evil"), InvalidTargetError),
    ("scope-outside-policy", lambda ca, c: cc_form(scope="orders:read admin"), InvalidScopeError),
    ("malformed-scope", lambda ca, c: cc_form(scope="a  b"), InvalidScopeError),
    ("missing-subject-token", lambda ca, c: exchange_form("", subject_token=[]), InvalidRequestError),
    (
        "missing-subject-token-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), subject_token_type=[]),
        InvalidRequestError,
    ),
    (
        "wrong-subject-token-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), subject_token_type=TOKEN_TYPE_ACCESS_TOKEN),
        InvalidRequestError,
    ),
    ("actor-token-without-type", lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token="x"), InvalidRequestError),
    (
        "actor-token-type-alone",
        lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token_type=TOKEN_TYPE_JWT),
        InvalidRequestError,
    ),
    (
        "actor-token-delegation",
        lambda ca, c: exchange_form(jwt_svid(ca, c), actor_token="x", actor_token_type=TOKEN_TYPE_JWT),
        InvalidRequestError,
    ),
    (
        "unsupported-requested-type",
        lambda ca, c: exchange_form(jwt_svid(ca, c), requested_token_type="urn:x"),
        InvalidRequestError,
    ),
    ("jwt-svid-for-other-id", lambda ca, c: exchange_form(jwt_svid(ca, c, spiffe_id=OTHER)), InvalidGrantError),
    (
        "jwt-svid-wrong-audience",
        lambda ca, c: exchange_form(jwt_svid(ca, c, audience=["https://other"])),
        InvalidGrantError,
    ),
    ("jwt-svid-expired", lambda ca, c: exchange_form(jwt_svid(ca, c, ttl=-120)), InvalidGrantError),
    (
        "jwt-svid-foreign-signer",
        lambda ca, c: exchange_form(jwt_svid(DevCA.ephemeral("example.org"), c)),
        InvalidGrantError,
    ),
    ("jwt-svid-garbage", lambda ca, c: exchange_form("not.a.jwt"), InvalidGrantError),
    ("jwt-svid-non-ascii", lambda ca, c: exchange_form("é.é.é"), InvalidGrantError),
    ("jwt-svid-too-large", lambda ca, c: exchange_form("a" * 20000), InvalidGrantError),
]


@pytest.mark.parametrize(
    ("form_for", "error"), [(f, e) for _, f, e in BAD_REQUESTS], ids=[i for i, _, _ in BAD_REQUESTS]
)
async def test_bad_request_is_refused_with_its_error_and_issues_nothing(
    endpoint: TokenEndpoint,
    ca: DevCA,
    client: AuthenticatedClient,
    form_for: Callable[[DevCA, AuthenticatedClient], dict[str, list[str]]],
    error: type[OAuthError],
) -> None:
    with pytest.raises(OAuthError) as info:
        await endpoint.handle(form_for(ca, client), client)
    assert type(info.value) is error
    assert endpoint.issuer.issued_count == 0


def test_single_values_drops_empty_values_and_keeps_targets_multi() -> None:
    single, multi = single_values({"a": [""], "b": ["x"], "audience": ["1", "2"], "resource": [""]})
    assert single == {"b": "x"}
    assert multi == {"audience": ["1", "2"], "resource": []}


@pytest.mark.parametrize(
    ("name", "shown"),
    [("scope", "'scope'"), ("x-canary-c4n4ry", "(unknown)")],
    ids=["known-parameter-named", "unknown-name-not-echoed"],
)
def test_repeated_parameter_error_names_only_known_parameters(name: str, shown: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        single_values({name: ["a", "b"]})
    assert caught.value.description == f"parameter {shown} is repeated"
    assert "c4n4ry" not in str(caught.value)


def test_registries_list_methods_and_grants_in_registration_order(endpoint: TokenEndpoint) -> None:
    assert endpoint.auth_methods == ("tls_client_auth",)
    assert endpoint.grant_types == ("urn:ietf:params:oauth:grant-type:token-exchange", "client_credentials")


async def test_unsupported_grant_type_names_the_registered_grants(
    endpoint: TokenEndpoint, client: AuthenticatedClient
) -> None:
    with pytest.raises(UnsupportedGrantTypeError) as caught:
        await endpoint.handle(cc_form(grant_type="password"), client)
    assert caught.value.description == "supported: token exchange (RFC 8693) and client_credentials"


async def test_grant_type_is_checked_before_client_id(endpoint: TokenEndpoint, client: AuthenticatedClient) -> None:
    """Error precedence: request syntax (the grant type) comes before the form's client_id (RFC 8705 §2)."""
    with pytest.raises(UnsupportedGrantTypeError):
        await endpoint.handle(cc_form(grant_type="password", client_id=str(OTHER)), client)


async def test_subject_token_is_checked_before_policy(
    endpoint: TokenEndpoint, ca: DevCA, client: AuthenticatedClient
) -> None:
    """A stolen JWT-SVID learns nothing about policy: invalid_grant wins over an audience outside policy."""
    form = exchange_form(jwt_svid(ca, client, spiffe_id=OTHER), audience="https://evil")
    with pytest.raises(InvalidGrantError):
        await endpoint.handle(form, client)


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [("Basic Y2xpZW50OnNlY3JldA==", "Basic"), ("DPoP x", "DPoP"), ("b@d x", "Basic"), ("", "Basic")],
    ids=["basic", "other-scheme-echoed", "not-a-token-shown-as-basic", "empty"],
)
def test_authorization_header_no_method_takes_is_refused_with_a_challenge(
    endpoint: TokenEndpoint, authorization: str, challenge: str
) -> None:
    with pytest.raises(InvalidClientError) as caught:
        endpoint.authenticate(RequestContext(authorization=authorization))
    assert caught.value.description == "only tls_client_auth (mutual TLS with an X.509-SVID) is supported"
    assert caught.value.headers["WWW-Authenticate"] == f'{challenge} realm="spiffe-broker"'


def test_request_without_tls_is_refused(endpoint: TokenEndpoint) -> None:
    with pytest.raises(InvalidClientError) as caught:
        endpoint.authenticate(RequestContext())
    assert caught.value.description == "mutual TLS with an X.509-SVID is required"


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.grant_types: list[str | None] = []
        self.reasons: list[str | None] = []

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None:
        self.events.append(("issued", token.audience))

    def refused(
        self,
        error: OAuthError,
        client: AuthenticatedClient | None,
        grant_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.events.append(("refused", error.error))
        self.grant_types.append(grant_type)
        self.reasons.append(reason)


async def test_every_outcome_passes_the_audit_hook(key_store: InMemoryKeyStore, client: AuthenticatedClient) -> None:
    audit = RecordingAudit()
    endpoint = TokenEndpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        audit=audit,
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    endpoint.register_grant(ClientCredentialsGrant())
    await endpoint.handle(cc_form(), client)
    with pytest.raises(InvalidTargetError):
        await endpoint.handle(cc_form(audience="https://evil"), client)
    with pytest.raises(InvalidClientError):
        endpoint.authenticate(RequestContext())
    assert audit.events == [("issued", API), ("refused", "invalid_target"), ("refused", "invalid_client")]
    assert audit.grant_types == ["client_credentials", None]  # before authentication, nothing is known


async def test_a_refusal_names_only_a_grant_type_the_endpoint_serves(
    key_store: InMemoryKeyStore, client: AuthenticatedClient
) -> None:
    audit = RecordingAudit()
    endpoint = TokenEndpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        audit=audit,
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    endpoint.register_grant(ClientCredentialsGrant())
    with pytest.raises(UnsupportedGrantTypeError):
        await endpoint.handle({"grant_type": ["eyJhbGciOi.made-up"]}, client)
    assert audit.grant_types == [None]


class QuarantineOf:
    """Quarantines one SPIFFE ID, and counts its checks."""

    def __init__(self, spiffe_id: str) -> None:
        self.spiffe_id = spiffe_id
        self.checks = 0

    def check(self, client: AuthenticatedClient) -> None:
        self.checks += 1
        if str(client.spiffe_id) == self.spiffe_id:
            raise QuarantinedError()


async def test_a_quarantined_client_is_refused_access_denied_after_the_grant_and_audited_as_quarantined(
    endpoint: TokenEndpoint, client: AuthenticatedClient
) -> None:
    audit = RecordingAudit()
    endpoint = TokenEndpoint(
        issuer=endpoint.issuer, policy_store=InMemoryPolicyStore(parse_policy(POLICY)), audit=audit
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    endpoint.register_grant(ClientCredentialsGrant())
    quarantine = QuarantineOf(str(client.spiffe_id))
    endpoint.use_quarantine(quarantine)
    with pytest.raises(UnsupportedGrantTypeError):  # the grant is checked first: no quarantine check yet
        await endpoint.handle(cc_form(grant_type="password"), client)
    assert quarantine.checks == 0
    with pytest.raises(AccessDeniedError) as caught:
        await endpoint.handle(cc_form(), client)
    assert (caught.value.error, caught.value.status) == ("access_denied", 403)
    assert caught.value.description == "this client's SPIFFE ID is quarantined"
    assert endpoint.issuer.issued_count == 0
    assert audit.events[-1] == ("refused", "access_denied")
    assert audit.reasons == [None, "quarantined"]


async def test_client_of_authenticates_like_the_token_endpoint_without_an_audit_record(
    key_store: InMemoryKeyStore,
) -> None:
    audit = RecordingAudit()
    endpoint = TokenEndpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        audit=audit,
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    with pytest.raises(InvalidClientError):
        endpoint.client_of(RequestContext())
    with pytest.raises(InvalidClientError) as caught:
        endpoint.client_of(RequestContext(authorization="Basic Zm9vOmJhcg=="))
    assert caught.value.headers["WWW-Authenticate"] == 'Basic realm="spiffe-broker"'
    assert audit.events == []
