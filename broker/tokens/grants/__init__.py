"""Grant types of the token endpoint (RFC 6749 §4), one class per grant, registered with
:meth:`broker.tokens.endpoint.TokenEndpoint.register_grant`.

A grant checks in two phases, so that every request keeps the error precedence of docs/architecture.md:

1. :meth:`Grant.validate_request`: its own parameters (request syntax, ``invalid_request``), before the target and
   scope are parsed; returns the ``issued_token_type`` to report (RFC 8693 §2.2.1) or None;
2. :meth:`Grant.check_grant`: the grant itself (``invalid_grant``), after target and scope and before policy, so a
   stolen credential learns nothing about policy.

* :mod:`broker.tokens.grants.token_exchange`: RFC 8693 token exchange with a JWT-SVID as ``subject_token``;
* :mod:`broker.tokens.grants.client_credentials`: RFC 6749 §4.4.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from broker.tokens.issuer import AuthenticatedClient

__all__ = ["Grant"]


class Grant(Protocol):
    """One RFC 8414 ``grant_types_supported`` value."""

    @property
    def grant_type(self) -> str:
        """The ``grant_type`` parameter value (RFC 6749 §4)."""
        ...

    @property
    def label(self) -> str:
        """How ``unsupported_grant_type`` names this grant to a client."""
        ...

    def validate_request(self, params: Mapping[str, str]) -> str | None: ...

    def check_grant(self, params: Mapping[str, str], client: AuthenticatedClient) -> None: ...
