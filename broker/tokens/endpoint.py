"""The token endpoint (RFC 6749 §3.2), framework-free and built from registries, in the shape of authlib's
``AuthorizationServer``: form in, :class:`TokenResponse` or an :class:`~broker.errors.OAuthError` out.

A request runs, in this order (docs/architecture.md, "Error precedence at /token"):

1. :meth:`TokenEndpoint.authenticate`: the transport's credentials, before the body is read. A client
   certificate is verified now (an unacceptable one is 401 ``invalid_client``); credentials in an
   ``Authorization`` header that no registered method takes are 401 ``invalid_client`` with a challenge in the
   scheme the client used (RFC 6749 §5.2). A TLS connection without a certificate goes on when client assertions
   are served: the body may authenticate the client;
2. :meth:`TokenEndpoint.handle`: parameters (RFC 6749 §3.2: none may repeat except ``audience`` and ``resource``,
   RFC 8693 §2.1; an empty value counts as omitted, RFC 6749 §3.1) -> the client assertion, if any (RFC 7521
   §4.2, one :class:`~broker.tokens.client_auth.AssertionMethod` per ``client_assertion_type``; with neither an
   assertion nor a certificate: ``invalid_client``) -> the grant registry (``grant_type`` missing:
   ``invalid_request``; unknown: ``unsupported_grant_type``) -> the method's form checks (``client_id``, RFC 8705
   §2) -> the grant's parameters -> target and scope syntax -> the grant itself -> the sender constraint (a
   hook: a DPoP proof, RFC 9449 §4.3, or the client certificate, RFC 8705 §3) -> quarantine (a hook) -> policy
   (:mod:`broker.tokens.policy`) -> issue (:mod:`broker.tokens.issuer`) -> audit (a hook).

A quarantined client is refused by the quarantine hook with :class:`QuarantinedError` (``access_denied``), which
the audit hook records with the broker's reason code ``quarantined``. ``/revoke`` (RFC 7009 §2.1) and
``/introspect`` (RFC 7662 §2.1) authenticate their callers with this endpoint's client-authentication registry
(:meth:`TokenEndpoint.client_of`, :meth:`TokenEndpoint.check_client`), without a ``token.refused`` record.

Every :class:`~broker.errors.OAuthError` of either step passes through one error path (the audit hook's
``refused``) and propagates; the web layer renders it (:mod:`broker.web.errors`). A new grant or client
authentication method is a new class registered here, not an ``if`` in this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, Protocol

from broker.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
    UnsupportedGrantTypeError,
)
from broker.oauth.binding import Binding
from broker.oauth.constants import TOKEN_TYPE_BEARER, TOKEN_TYPE_DPOP
from broker.oauth.form import select_target, single_values
from broker.tokens.client_auth import AssertionMethod, CheckedAssertion, ClientAuthMethod, RequestContext
from broker.tokens.grants import Grant
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient, IssuedToken
from broker.tokens.policy import PolicyStore, parse_scope

__all__ = [
    "Audit",
    "CertificateBinding",
    "Quarantine",
    "QuarantinedError",
    "SenderConstraint",
    "TokenEndpoint",
    "TokenResponse",
]

_AUTH_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).

    ``token_type`` is ``DPoP`` for a token bound to a DPoP key (RFC 9449 §5: MUST), else ``Bearer``: RFC 8705 §3
    binds a token to the certificate without defining a new token type, and resource servers check the binding
    (``cnf``) themselves.
    """

    token: IssuedToken = field(repr=False)
    issued_token_type: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers besides the body's: a fresh ``DPoP-Nonce`` (RFC 9449 §8.2)."""

    @property
    def token_type(self) -> str:
        binding = self.token.binding
        return TOKEN_TYPE_DPOP if binding is not None and binding.member == "jkt" else TOKEN_TYPE_BEARER

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": self.token.token, "token_type": self.token_type}
        if self.issued_token_type is not None:
            body["issued_token_type"] = self.issued_token_type
        body["expires_in"] = self.token.expires_in
        if self.token.scopes:
            body["scope"] = " ".join(self.token.scopes)
        return body

    def body(self) -> bytes:
        """:meth:`to_json` as ``json.dumps`` writes it (default separators, ASCII), without building the dict and
        running the generic encoder: the members in the same order, each string through the same escaping
        function ``json.dumps`` uses (``tests/unit/tokens/test_endpoint.py`` holds the two together)."""
        token = self.token
        parts = ['{"access_token": ', _json_string(token.token), ', "token_type": ', _json_string(self.token_type)]
        if self.issued_token_type is not None:
            parts += [', "issued_token_type": ', _json_string(self.issued_token_type)]
        parts += [', "expires_in": ', int.__repr__(token.expires_in)]
        if token.scopes:
            parts += [', "scope": ', _json_string(" ".join(token.scopes))]
        parts.append("}")
        return "".join(parts).encode("ascii")


class Quarantine(Protocol):
    """Refuses a client that is quarantined (raises an :class:`OAuthError`); runs after the grant, before policy."""

    def check(self, client: AuthenticatedClient) -> None: ...


class SenderConstraint(Protocol):
    """What the token will be bound to (RFC 7800 ``cnf``): checks the request's proof of possession."""

    async def binding(self, client: AuthenticatedClient, context: RequestContext) -> Binding | None: ...

    def precheck(self, context: RequestContext) -> None:
        """What can be refused before any client credential is spent: run before a client assertion's ``jti`` is
        recorded, so a retry the server asks for (RFC 9449 §8 ``use_dpop_nonce``) can resend the same
        assertion (a SPIRE agent hands out the same JWT-SVID again). Changes no state."""
        ...

    def success_headers(self) -> dict[str, str]:
        """Headers for a successful token response (RFC 9449 §8.2: a new ``DPoP-Nonce``)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 members this constraint advertises (RFC 9449 §5.1 ``dpop_signing_alg_values_supported``)."""
        ...


class CertificateBinding:
    """RFC 8705 §3: bind to the connection's client certificate. Without one the token would be a bearer token:
    refused (``invalid_request``) unless ``allow_bearer``. A DPoP header is ignored (RFC 9449 §5: a server that
    does not support DPoP issues what it would have issued anyway)."""

    def __init__(self, *, allow_bearer: bool = False) -> None:
        self._allow_bearer = allow_bearer

    async def binding(self, client: AuthenticatedClient, context: RequestContext) -> Binding | None:
        binding = client.binding()
        if binding is None and not self._allow_bearer:
            raise InvalidRequestError(
                "this server issues only sender-constrained tokens: present a client certificate (RFC 8705) "
                "or a DPoP proof (RFC 9449)"
            )
        return binding

    def precheck(self, context: RequestContext) -> None:
        return None

    def success_headers(self) -> dict[str, str]:
        return {}

    def metadata(self) -> dict[str, Any]:
        return {}


async def _nothing_to_spend() -> None:
    """A certificate is not consumed by its use."""


class QuarantinedError(AccessDeniedError):
    """403 ``access_denied`` for a quarantined client (RFC 6749 §4.1.2.1: the authorization server denied the
    request). The description never carries the quarantine's reason (that is for the operators' audit journal)."""

    reason = "quarantined"

    def __init__(self) -> None:
        super().__init__("this client's SPIFFE ID is quarantined")


class Audit(Protocol):
    """Records every outcome: a token issued, or a request refused (``client`` None before authentication)."""

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None: ...

    def refused(
        self,
        error: OAuthError,
        client: AuthenticatedClient | None,
        grant_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        """``grant_type`` is the request's grant type when it is one this endpoint serves, else None (a value the
        client made up is never passed on); ``reason`` a broker code (``quarantined``), never the client's words."""
        ...


class _Nobody:
    """No quarantine and no audit trail (the default)."""

    def check(self, client: AuthenticatedClient) -> None:
        return None

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None:
        return None

    def refused(
        self,
        error: OAuthError,
        client: AuthenticatedClient | None,
        grant_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        return None


class TokenEndpoint:
    """Client-auth registry -> grant registry -> quarantine -> policy -> issue -> audit."""

    def __init__(
        self,
        *,
        issuer: AccessTokenIssuer,
        policy_store: PolicyStore,
        quarantine: Quarantine | None = None,
        audit: Audit | None = None,
        sender_constraint: SenderConstraint | None = None,
    ) -> None:
        self.issuer = issuer
        self.policy_store = policy_store
        self._quarantine: Quarantine = quarantine or _Nobody()
        self._audit: Audit = audit or _Nobody()
        self.sender_constraint: SenderConstraint = sender_constraint or CertificateBinding()
        self._client_auth: dict[str, ClientAuthMethod] = {}
        self._assertions: dict[str, AssertionMethod] = {}
        self._grants: dict[str, Grant] = {}

    def register_client_auth(self, method: ClientAuthMethod) -> None:
        """Accept ``method`` (tried in registration order; RFC 8414 ``token_endpoint_auth_methods_supported``)."""
        self._client_auth[method.name] = method

    def register_assertion(self, method: AssertionMethod) -> None:
        """Accept client assertions of ``method.assertion_type`` (RFC 7521 §4.2), advertised as ``method.name``."""
        self._assertions[method.assertion_type] = method

    def register_grant(self, grant: Grant) -> None:
        """Accept ``grant`` (RFC 8414 ``grant_types_supported``)."""
        self._grants[grant.grant_type] = grant

    def use_quarantine(self, quarantine: Quarantine) -> None:
        """Refuse quarantined clients with ``quarantine`` (the replica's revocation index, set before serving)."""
        self._quarantine = quarantine

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """RFC 8414 ``token_endpoint_auth_methods_supported``: transport methods, then assertion methods."""
        return (*self._client_auth, *(method.name for method in self._assertions.values()))

    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 §2 members that describe this endpoint's client authentication and token binding."""
        members: dict[str, Any] = {"token_endpoint_auth_methods_supported": list(self.auth_methods)}
        algorithms = sorted({alg for method in self._assertions.values() for alg in method.signing_algorithms})
        if algorithms:
            members["token_endpoint_auth_signing_alg_values_supported"] = algorithms
        members.update(self.sender_constraint.metadata())
        return members

    @property
    def transport_auth_methods(self) -> tuple[str, ...]:
        """The methods ``/revoke`` and ``/introspect`` take (:meth:`client_of`)."""
        return tuple(self._client_auth)

    @property
    def grant_types(self) -> tuple[str, ...]:
        return tuple(self._grants)

    def authenticate(self, context: RequestContext) -> AuthenticatedClient | None:
        """Step 1: the client, from the transport's credentials; 401 ``invalid_client`` otherwise. None: a TLS
        connection without a client certificate, when client assertions may authenticate it in step 2."""
        if self._assertions and context.authorization is None and _no_certificate(context):
            return None
        try:
            return self.client_of(context)
        except OAuthError as exc:
            self._audit.refused(exc, None)
            raise

    def client_of(self, context: RequestContext) -> AuthenticatedClient:
        """Step 1 without an audit record: the caller of ``/revoke`` or ``/introspect``, authenticated as at this
        endpoint (RFC 7009 §2.1, RFC 7662 §2.1); 401 ``invalid_client`` otherwise."""
        return self._method_for(context).authenticate(context)

    def check_client(self, client: AuthenticatedClient, params: Mapping[str, str]) -> None:
        """The form's client parameters agree with ``client`` (``client_id``, RFC 8705 §2)."""
        self._client_auth[client.auth_method].check_request(client, params)

    async def handle(
        self,
        form: Mapping[str, Sequence[str]],
        transport: AuthenticatedClient | None,
        context: RequestContext | None = None,
    ) -> TokenResponse:
        """Step 2: authenticate a client assertion, validate the request, apply policy and issue; every refusal is
        an :class:`OAuthError`. ``transport`` is step 1's client, ``context`` the request's transport facts."""
        client = transport
        try:
            params, targets = single_values(form)
            self.sender_constraint.precheck(context or RequestContext())
            checked = await self._client_for(params, transport)
            client = checked.client
            return await self._handle(params, targets, checked, context or RequestContext())
        except OAuthError as exc:
            reason = exc.reason if isinstance(exc, QuarantinedError) else None
            self._audit.refused(exc, client, self.served_grant_type(form), reason)
            raise

    async def _client_for(self, params: Mapping[str, str], transport: AuthenticatedClient | None) -> CheckedAssertion:
        """The client a ``client_assertion`` proves (RFC 7521 §4.2), not yet spent; else the transport's."""
        assertion_type, assertion = params.get("client_assertion_type"), params.get("client_assertion")
        if assertion_type is None and assertion is None:
            if transport is None:
                raise InvalidClientError(
                    "no client authentication: present an X.509-SVID (mutual TLS) or a client assertion (RFC 7523)"
                )
            return CheckedAssertion(transport, _nothing_to_spend)
        if assertion_type is None or assertion is None:
            raise InvalidRequestError("client_assertion and client_assertion_type go together (RFC 7521 §4.2)")
        method = self._assertions.get(assertion_type)
        if method is None:
            raise InvalidClientError("unsupported client_assertion_type")
        return await method.check(assertion, params, transport)

    def served_grant_type(self, form: Mapping[str, Sequence[str]]) -> str | None:
        """The form's single ``grant_type`` if this endpoint serves it, else None (never a client's made-up value)."""
        values = form.get("grant_type", ())
        return values[0] if len(values) == 1 and values[0] in self._grants else None

    async def _handle(
        self,
        params: Mapping[str, str],
        targets: Mapping[str, Sequence[str]],
        checked: CheckedAssertion,
        context: RequestContext,
    ) -> TokenResponse:
        client = checked.client
        grant = self._grant_for(params.get("grant_type"))
        if client.auth_method in self._client_auth:
            self.check_client(client, params)
        issued_token_type = grant.validate_request(params)
        audience = select_target(targets)
        scopes = parse_scope(params.get("scope"))
        grant.check_grant(params, client)  # the grant is checked before policy: a stolen JWT-SVID learns nothing
        binding = await self.sender_constraint.binding(client, context)
        self._quarantine.check(client)
        decision = self.policy_store.current().authorize(client.spiffe_id, audience, scopes)
        await checked.spend()  # only now: a refused request leaves a client assertion unspent (CheckedAssertion)
        token = self.issuer.issue(
            client=client,
            audience=decision.audience,
            scopes=decision.scopes,
            max_lifetime=decision.max_lifetime,
            binding=binding,
        )
        self._audit.issued(client, token)
        return TokenResponse(token, issued_token_type, self.sender_constraint.success_headers())

    def _grant_for(self, grant_type: str | None) -> Grant:
        if grant_type is None:
            raise InvalidRequestError("missing parameter 'grant_type'")
        grant = self._grants.get(grant_type)
        if grant is None:
            labels = " and ".join(g.label for g in self._grants.values())
            raise UnsupportedGrantTypeError(f"supported: {labels}")
        return grant

    def _method_for(self, context: RequestContext) -> ClientAuthMethod:
        for method in self._client_auth.values():
            if method.applies(context):
                return method
        if context.authorization is not None:
            raise _authorization_refused(context.authorization, assertions=bool(self._assertions))
        raise InvalidClientError("no supported client authentication was presented")


def _no_certificate(context: RequestContext) -> bool:
    """A TLS connection whose peer sent no certificate (the listener asks for one but does not require it)."""
    return context.tls is not None and context.tls.getpeercert(binary_form=True) is None


def _authorization_refused(authorization: str, *, assertions: bool) -> InvalidClientError:
    """401 with a challenge in the scheme the client used (RFC 6749 §5.2), or ``Basic`` if it is not a token."""
    scheme = authorization.split(" ", 1)[0]
    error = InvalidClientError(
        "the Authorization header carries no supported credentials: use mutual TLS with an X.509-SVID or a client "
        "assertion (RFC 7523) in the form"
        if assertions
        else "only tls_client_auth (mutual TLS with an X.509-SVID) is supported"
    )
    shown = scheme if _AUTH_SCHEME.fullmatch(scheme) else "Basic"
    error.headers["WWW-Authenticate"] = f'{shown} realm="spiffe-broker"'
    return error
