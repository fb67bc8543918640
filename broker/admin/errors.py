"""The admin API's own refusals, rendered by the one error renderer (:mod:`broker.web.errors`).

They derive from :class:`~broker.errors.OAuthError` because that is the branch the renderer shows as it is
(``{"error", "error_description"}`` with the class's status, RFC 6749 §5.2's shape); their codes are the admin
API's own, documented here and in :data:`ADMIN_ERRORS`, from which :class:`~broker.admin.client.AdminClient` maps
an error body back to the same class::

    OAuthError
    └── AdminError                     admin_error            400  (base; a code the client does not know)
        ├── AdminNotFoundError         not_found              404  no such admin endpoint
        │   ├── KidNotFoundError       unknown_kid            404  ``keys/{kid}/revoke`` of a kid the keyring lacks
        │   └── ClientNotFoundError    unknown_client         404  a client_id the client registry lacks
        ├── AdminMethodNotAllowedError method_not_allowed     405  (``Allow`` names the methods)
        ├── AdminConflictError         conflict               409  the resource is not in a state the call needs
        │   ├── KidAlreadyRevokedError kid_already_revoked    409  the kid is revoked already
        │   └── ClientExistsError      client_exists          409  ``clients`` add of a client_id already taken
        └── AuditUnavailableError      audit_unavailable      503  the audit journal refused the record

Quarantine's refusals are :mod:`broker.tokens.quarantine`'s own classes, sent as they are (their codes are in
:data:`ADMIN_ERRORS` too)::

    InvalidRequestError
    ├── InvalidPatternError            invalid_pattern        400  not a SPIFFE ID, nor spiffe://td/path/*
    │   └── WholeTrustDomainError      whole_trust_domain     400  spiffe://td/* without all_of_trust_domain
    ├── InvalidReasonError             invalid_reason         400  empty, too long, control characters
    └── InvalidUntilError              invalid_until          400  not RFC 3339 or a duration, or not ahead
    NotQuarantinedError                not_quarantined        404  release of a pattern not quarantined

A client registration the registry's rule (:func:`~broker.tokens.clients.check_client`) refuses is
:class:`InvalidClientMetadataError`, ``invalid_client_metadata`` (400), RFC 7591 §3.2.2's code for it; its
description names the first problem and never quotes key material.

API-key exceptions' refusals are :mod:`broker.apikeys.errors`' classes, sent as they are::

    InvalidExceptionError              invalid_exception      400  a record, change or secret the rules refuse
    UnknownExceptionError              unknown_exception      404  no exception of that name
    ExceptionExistsError               exception_exists       409  add of a name taken (never reused)
    ExceptionConflictError             exception_conflict     409  changed meanwhile, revoked, not suspended
    SecretUnavailableError             secret_unavailable     500  a version this replica's KEKs do not open

Authentication reuses the core classes: no or no valid X.509-SVID is ``invalid_client`` (401, RFC 8705 §2.1's
code), a valid SPIFFE ID that is not an admin is ``access_denied`` (403); a bad body or query is
``invalid_request`` (400). A :class:`~broker.admin.ports.KeyAdmin` adapter raises :class:`KidNotFoundError` and
:class:`KidAlreadyRevokedError` for the keyring's refusals. The next issues add their codes here.
"""

from __future__ import annotations

from broker.apikeys.errors import (
    ExceptionConflictError,
    ExceptionExistsError,
    InvalidExceptionError,
    SecretUnavailableError,
    UnknownExceptionError,
)
from broker.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
    ServerError,
    TemporarilyUnavailableError,
)
from broker.tokens.quarantine import (
    InvalidPatternError,
    InvalidReasonError,
    InvalidUntilError,
    NotQuarantinedError,
    WholeTrustDomainError,
)

__all__ = [
    "ADMIN_ERRORS",
    "AdminConflictError",
    "AdminError",
    "AdminMethodNotAllowedError",
    "AdminNotFoundError",
    "AuditUnavailableError",
    "ClientExistsError",
    "ClientNotFoundError",
    "InvalidClientMetadataError",
    "KidAlreadyRevokedError",
    "KidNotFoundError",
]


class AdminError(OAuthError):
    """An admin API refusal; ``error`` is the admin API's code (see the module docstring)."""

    error = "admin_error"
    status = 400


class AdminNotFoundError(AdminError):
    """No such admin endpoint (or, in a subclass, no such resource)."""

    error = "not_found"
    status = 404


class KidNotFoundError(AdminNotFoundError):
    """The keyring holds no key with this kid."""

    error = "unknown_kid"

    @classmethod
    def for_kid(cls, kid: str) -> KidNotFoundError:
        return cls(f"no signing key with kid {kid!r}: run 'spiffe-broker keys list' and name one of them")


class AdminMethodNotAllowedError(AdminError):
    """The endpoint exists but not with this method; ``Allow`` names the ones it takes (RFC 9110 §15.5.6)."""

    error = "method_not_allowed"
    status = 405

    @classmethod
    def allowing(cls, allowed: frozenset[str] | set[str]) -> AdminMethodNotAllowedError:
        methods = ", ".join(sorted(allowed))
        error = cls(f"this admin endpoint takes {methods}")
        error.headers["Allow"] = methods
        return error


class AdminConflictError(AdminError):
    """The resource is not in a state the call needs; nothing was changed."""

    error = "conflict"
    status = 409


class KidAlreadyRevokedError(AdminConflictError):
    """The key is revoked already; nothing was changed."""

    error = "kid_already_revoked"

    @classmethod
    def for_kid(cls, kid: str) -> KidAlreadyRevokedError:
        return cls(f"signing key {kid!r} is already revoked: nothing to do")


class ClientNotFoundError(AdminNotFoundError):
    """The client registry holds no client with this ``client_id``."""

    error = "unknown_client"

    @classmethod
    def for_client(cls, client_id: str) -> ClientNotFoundError:
        return cls(f"no registered client {client_id!r}: run 'spiffe-broker clients list' and name one of them")


class ClientExistsError(AdminConflictError):
    """A client with this ``client_id`` is registered already; nothing was changed."""

    error = "client_exists"

    @classmethod
    def for_client(cls, client_id: str) -> ClientExistsError:
        return cls(f"a client {client_id!r} is registered already: remove it first, or choose another client_id")


class InvalidClientMetadataError(InvalidRequestError):
    """RFC 7591 §3.2.2 ``invalid_client_metadata``: a registration value is invalid; nothing was changed."""

    error = "invalid_client_metadata"


class AuditUnavailableError(TemporarilyUnavailableError):
    """The audit journal did not take the call's record, so the call was not performed (fail closed)."""

    error = "audit_unavailable"

    def __init__(self, description: str = "") -> None:
        super().__init__(description or "the audit journal is unavailable: nothing was done; retry later")


# Code -> class, for the client (the server's codes; the core ones it may send too).
ADMIN_ERRORS: dict[str, type[OAuthError]] = {
    cls.error: cls
    for cls in (
        InvalidRequestError,
        InvalidClientError,
        AccessDeniedError,
        ServerError,
        TemporarilyUnavailableError,
        AdminError,
        AdminNotFoundError,
        KidNotFoundError,
        AdminMethodNotAllowedError,
        AdminConflictError,
        KidAlreadyRevokedError,
        ClientNotFoundError,
        ClientExistsError,
        InvalidClientMetadataError,
        AuditUnavailableError,
        InvalidPatternError,
        WholeTrustDomainError,
        InvalidReasonError,
        InvalidUntilError,
        NotQuarantinedError,
        InvalidExceptionError,
        UnknownExceptionError,
        ExceptionExistsError,
        ExceptionConflictError,
        SecretUnavailableError,
    )
}
