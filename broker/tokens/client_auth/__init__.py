"""Client authentication at the token endpoint (RFC 6749 §2.3), one class per method, framework-free.

A method authenticates in two phases, because the transport's credentials are checked before the request body
is read (docs/architecture.md, "Error precedence at /token"):

1. :meth:`ClientAuthMethod.authenticate`: the credentials the transport carries (:class:`RequestContext`: the
   TLS connection, the ``Authorization`` header), before the body is read;
2. :meth:`ClientAuthMethod.check_request`: the form parameters that name or prove the client (``client_id``;
   RFC 7523 §2.2 ``client_assertion`` for ``private_key_jwt`` and ``jwt-spiffe``), after the grant type is known.

Implemented: RFC 8705 §2.1 ``tls_client_auth`` (:mod:`broker.tokens.client_auth.mtls`), a transport method.

Client assertions (RFC 7521 §4.2: ``client_assertion_type`` and ``client_assertion`` in the form) are
:class:`AssertionMethod` classes, one per assertion type, run after the body is read
(:mod:`broker.tokens.client_auth.jwt_bearer` for RFC 7523 §2.2 ``private_key_jwt``,
:mod:`broker.tokens.client_auth.jwt_spiffe` for draft-ietf-oauth-spiffe-client-auth ``spiffe_jwt``). A request
that also presents a client certificate is one client only if both name the same SPIFFE ID (RFC 6749 §2.3: one
authentication method per request; the certificate then serves as the connection's proof of possession).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from broker.tokens.issuer import AuthenticatedClient

__all__ = ["AssertionMethod", "CheckedAssertion", "ClientAuthMethod", "RequestContext"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the transport knows about a token request: the ``Authorization`` header (if any) and the TLS
    connection (None without TLS). Built by the web layer; nothing here knows the web framework."""

    authorization: str | None = None
    tls: ssl.SSLObject | ssl.SSLSocket | None = field(default=None, repr=False)
    dpop: tuple[str, ...] = field(default=(), repr=False)  # every DPoP header value (RFC 9449 §4.3 item 1)


class ClientAuthMethod(Protocol):
    """One RFC 8414 ``token_endpoint_auth_methods_supported`` value."""

    @property
    def name(self) -> str: ...

    def applies(self, context: RequestContext) -> bool:
        """Whether the request presents this method's credentials (RFC 6749 §2.3: one method per request)."""
        ...

    def authenticate(self, context: RequestContext) -> AuthenticatedClient:
        """The client, from the transport's credentials; ``invalid_client`` (401) otherwise."""
        ...

    def check_request(self, client: AuthenticatedClient, params: Mapping[str, str]) -> None:
        """The form's client parameters agree with ``client``; ``invalid_client`` otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class CheckedAssertion:
    """A client assertion that passed every check but the replay cache: ``spend`` records its use (raising
    ``invalid_client`` for a replay, ``temporarily_unavailable`` if the cache cannot record it). The token endpoint
    spends it only when a token is about to be issued, so a request refused for anything else (its audience,
    scope, DPoP proof, policy) leaves the assertion unspent: a SPIRE agent hands out the same JWT-SVID again, and
    one bad request must not lock its workload out. Concurrent requests still get one token between them: the
    cache's insert-if-absent admits one."""

    client: AuthenticatedClient
    spend: Callable[[], Awaitable[None]] = field(repr=False)


class AssertionMethod(Protocol):
    """One ``client_assertion_type`` (RFC 7521 §4.2) and the RFC 8414 auth method name it is advertised as."""

    @property
    def name(self) -> str: ...

    @property
    def assertion_type(self) -> str: ...

    @property
    def signing_algorithms(self) -> tuple[str, ...]:
        """RFC 8414 ``token_endpoint_auth_signing_alg_values_supported`` for this method."""
        ...

    async def authenticate(
        self, assertion: str, params: Mapping[str, str], transport: AuthenticatedClient | None
    ) -> AuthenticatedClient:
        """The client the assertion proves (``transport``: the connection's verified X.509-SVID client, if any);
        ``invalid_client`` (401) otherwise, ``temporarily_unavailable`` if the replay cache cannot record it.
        :meth:`check`, then its ``spend``."""
        ...

    async def check(
        self, assertion: str, params: Mapping[str, str], transport: AuthenticatedClient | None
    ) -> CheckedAssertion:
        """Every check of :meth:`authenticate` except the replay cache, which the result's ``spend`` runs."""
        ...
