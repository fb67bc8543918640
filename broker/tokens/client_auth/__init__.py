"""Client authentication at the token endpoint (RFC 6749 §2.3), one class per method, framework-free.

A method authenticates in two phases, because the transport's credentials are checked before the request body
is read (docs/architecture.md, "Error precedence at /token"):

1. :meth:`ClientAuthMethod.authenticate`: the credentials the transport carries (:class:`RequestContext`: the
   TLS connection, the ``Authorization`` header), before the body is read;
2. :meth:`ClientAuthMethod.check_request`: the form parameters that name or prove the client (``client_id``;
   RFC 7523 §2.2 ``client_assertion`` for ``private_key_jwt`` and ``jwt-spiffe``), after the grant type is known.

Implemented: RFC 8705 §2.1 ``tls_client_auth`` (:mod:`broker.tokens.client_auth.mtls`). ``private_key_jwt`` and
``jwt-spiffe`` (RFC 7523 client assertions) are new classes that satisfy :class:`ClientAuthMethod`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from broker.tokens.issuer import AuthenticatedClient

__all__ = ["ClientAuthMethod", "RequestContext"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the transport knows about a token request: the ``Authorization`` header (if any) and the TLS
    connection (None without TLS). Built by the web layer; nothing here knows the web framework."""

    authorization: str | None = None
    tls: ssl.SSLObject | ssl.SSLSocket | None = field(default=None, repr=False)


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
