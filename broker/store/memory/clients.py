"""The client registry's in-memory twin: it refuses what the SQL stores refuse, in the same order.

:func:`~broker.store.client_rows.stamp` checks the registration (ValueError) before a taken ``client_id`` is
:class:`~broker.errors.StoreConflictError`; every change bumps the ``clients`` topic; the stored copy's ``jwks`` is
parsed from its JSON, as the SQL stores parse theirs, so a caller's dict never becomes the twin's state.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from broker.errors import StoreConflictError
from broker.events.topics import CLIENTS
from broker.store.client_rows import stamp, taken
from broker.store.memory.changes import MemoryChangeFeed
from broker.tokens.clients import RegisteredClient
from broker.tokens.keystore import check_instant

__all__ = ["MemoryClientRegistry"]


class MemoryClientRegistry:
    def __init__(self, changes: MemoryChangeFeed) -> None:
        self._changes = changes
        self._clients: dict[str, RegisteredClient] = {}

    async def add(self, client: RegisteredClient, *, at: datetime | None = None) -> RegisteredClient:
        row = stamp(client, at)
        if row.client.client_id in self._clients:
            raise StoreConflictError(taken(row.client.client_id))
        jwks = None if row.jwks is None else json.loads(row.jwks)
        stored = self._clients[row.client.client_id] = replace(row.client, jwks=jwks)
        self._changes.bump(CLIENTS)
        return stored

    async def get(self, client_id: str) -> RegisteredClient | None:
        return self._clients.get(client_id)

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        return tuple(self._clients[client_id] for client_id in sorted(self._clients))

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        check_instant(at)
        client = self._clients.get(client_id)
        if client is None:
            return None
        stored = self._clients[client_id] = replace(client, disabled=disabled, updated_at=at.astimezone(UTC))
        self._changes.bump(CLIENTS)
        return stored

    async def remove(self, client_id: str) -> bool:
        if self._clients.pop(client_id, None) is None:
            return False
        self._changes.bump(CLIENTS)
        return True
