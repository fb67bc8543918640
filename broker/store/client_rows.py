"""The client registry's rows, shared by the SQL engines and the in-memory twin (:mod:`broker.tokens.clients`).

A row holds the registration as :class:`~broker.tokens.clients.RegisteredClient` says, with two columns in JSON:
``jwks`` (the inline JWK Set, RFC 7517 §5, as :meth:`~broker.tokens.clients.RegisteredClient.jwks_json` writes it;
NULL for a ``jwks_uri`` client) and ``algorithms`` (a JSON array of JWS ``alg`` names, RFC 7518 §3.1). Every write
is checked by :func:`~broker.tokens.clients.check_client` first, so a row the store holds is always a valid one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from broker.tokens.clients import RegisteredClient, check_client
from broker.tokens.keystore import check_instant

__all__ = ["CLIENT_COLUMNS", "ClientRow", "client_of", "stamp", "taken"]

CLIENT_COLUMNS = (
    "client_id, spiffe_id, jwks, jwks_uri, algorithms, max_assertion_lifetime, disabled, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A registration ready to write: checked, stamped, its JSON columns serialised."""

    client: RegisteredClient
    jwks: str | None
    algorithms: str
    at: datetime


def stamp(client: RegisteredClient, at: datetime | None) -> ClientRow:
    """``client`` checked (ValueError before anything is written) and stamped ``created_at = updated_at = at``
    (now if None; timezone-aware, in UTC)."""
    when = datetime.now(UTC) if at is None else check_instant(at).astimezone(UTC)
    checked = replace(check_client(client), created_at=when, updated_at=when)
    return ClientRow(checked, checked.jwks_json(), json.dumps(list(checked.algorithms)), when)


def _as_is(value: Any) -> datetime | None:
    return None if value is None else check_instant(value)


def client_of(row: tuple[Any, ...], to_datetime: Callable[[Any], datetime | None] = _as_is) -> RegisteredClient:
    """A :data:`CLIENT_COLUMNS` row back as a :class:`RegisteredClient`, its JSON parsed; ``to_datetime`` turns
    the engine's stored times into datetimes (SQLite's microseconds; PostgreSQL's come back as datetimes)."""
    client_id, spiffe_id, jwks, jwks_uri, algorithms, lifetime, disabled, created, updated = row
    return RegisteredClient(
        client_id=str(client_id),
        spiffe_id=str(spiffe_id),
        jwks=None if jwks is None else json.loads(jwks),
        jwks_uri=None if jwks_uri is None else str(jwks_uri),
        algorithms=tuple(json.loads(algorithms)),
        max_assertion_lifetime=int(lifetime),
        disabled=bool(disabled),
        created_at=to_datetime(created),
        updated_at=to_datetime(updated),
    )


def taken(client_id: str) -> str:
    """The :class:`~broker.errors.StoreConflictError` message for a ``client_id`` registered already."""
    return f"client {client_id!r} is registered already: choose another client_id, or remove that client first"
