"""The refusals of governed API-key exceptions, each with its wire code (rendered by :mod:`broker.web.errors`).

Two audiences. The admin API (registry changes, :mod:`broker.apikeys.registry`) and the token service's grant
(:mod:`broker.apikeys.decision`, the codes :mod:`broker.apikeys.grant` documents for sidecars)::

    OAuthError
    ├── InvalidRequestError
    │   └── InvalidExceptionError      invalid_exception      400  a record or secret the model or the rules refuse
    ├── UnknownExceptionError          unknown_exception      404  admin: no exception of that name
    ├── ExceptionExistsError           exception_exists       409  admin: add of a name taken (names are never reused)
    ├── ExceptionConflictError         exception_conflict     409  admin: changed meanwhile, revoked (final), or not
    │                                                              in the state the change needs; nothing changed
    ├── SecretUnavailableError         secret_unavailable     500  a sealed version does not open here (KEK)
    ├── ExceptionNotFoundError         not_found              404  grant: no exception of that name
    └── AccessDeniedError
        └── GrantRefusedError          access_denied          403  grant: ``reason`` says which check refused

A description never quotes a secret or a sealed blob; a refusal's ``reason`` is a broker code, for the audit
journal (``apikey.refused``), never the caller's words.
"""

from __future__ import annotations

from broker.errors import AccessDeniedError, InvalidRequestError, OAuthError

__all__ = [
    "REFUSAL_CODES",
    "ExceptionConflictError",
    "ExceptionExistsError",
    "ExceptionNotFoundError",
    "GrantRefusedError",
    "InvalidExceptionError",
    "SecretUnavailableError",
    "UnknownExceptionError",
]

# The ``reason`` codes of GrantRefusedError, as apikey.refused records them.
REFUSAL_CODES = frozenset({"not_allowed", "suspended", "revoked", "expired", "review_overdue", "quarantined"})


class InvalidExceptionError(InvalidRequestError):
    """An exception record, a change or a secret that the model or the governance rules refuse."""

    error = "invalid_exception"


class UnknownExceptionError(OAuthError):
    error = "unknown_exception"
    status = 404

    @classmethod
    def named(cls, name: str) -> UnknownExceptionError:
        return cls(f"no API-key exception named {name!r}: 'spiffe-broker exceptions list' shows them")


class ExceptionExistsError(OAuthError):
    error = "exception_exists"
    status = 409


class ExceptionConflictError(OAuthError):
    error = "exception_conflict"
    status = 409


class SecretUnavailableError(OAuthError):
    """A sealed secret version does not open on this replica (its KEK is not configured, or the row is damaged).
    Nothing was revealed or changed; the description names the KEK id, never key material."""

    error = "secret_unavailable"
    status = 500


class ExceptionNotFoundError(OAuthError):
    """The grant's 404 (:mod:`broker.apikeys.grant`): no exception of that name."""

    error = "not_found"
    status = 404

    def __init__(self) -> None:
        super().__init__("no API-key exception of that name")


class GrantRefusedError(AccessDeniedError):
    """The grant's 403: the caller may not have this secret now; ``reason`` is one of :data:`REFUSAL_CODES`."""

    def __init__(self, reason: str, description: str) -> None:
        if reason not in REFUSAL_CODES:
            raise ValueError(f"not a refusal code: {reason}")
        super().__init__(description)
        self.reason = reason
