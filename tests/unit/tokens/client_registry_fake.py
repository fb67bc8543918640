"""A dict-backed :class:`~broker.tokens.clients.ClientRegistryStore` for tests, faithful to the Protocol: it checks
every registration, refuses a taken ``client_id``, stamps times, bumps the ``clients`` change topic on every
change, and (``failing``) raises as an unreachable store would. Keys for tests: :func:`ec_jwk`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import StoreConflictError, StoreUnavailableError
from broker.events.topics import CLIENTS
from broker.jose.jwk import ec_public_jwk
from broker.store.memory.changes import MemoryChangeFeed
from broker.tokens.clients import RegisteredClient, check_client

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
LEGACY = "spiffe://example.org/legacy/billing"


def ec_jwk(kid: str = "k1") -> dict[str, Any]:
    """A fresh P-256 public JWK with ``kid``; ``private`` members are never included."""
    return {**ec_public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()), "kid": kid, "alg": "ES256"}


def inline_client(client_id: str = "billing", *kids: str) -> RegisteredClient:
    return RegisteredClient(client_id, LEGACY, jwks={"keys": [ec_jwk(kid) for kid in kids or ("k1",)]})


class FakeClientRegistry:
    def __init__(self, changes: MemoryChangeFeed | None = None, at: datetime = T0) -> None:
        self.clients: dict[str, RegisteredClient] = {}
        self.changes = changes
        self.at = at
        self.failing = False
        self.reads = 0

    def _reach(self) -> None:
        if self.failing:
            raise StoreUnavailableError("memory: the registry is down (test)")

    def _bump(self) -> None:
        if self.changes is not None:
            self.changes.bump(CLIENTS)

    async def add(self, client: RegisteredClient) -> RegisteredClient:
        self._reach()
        check_client(client)
        if client.client_id in self.clients:
            raise StoreConflictError(f"client {client.client_id!r} is registered already")
        stored = self.clients[client.client_id] = replace(client, created_at=self.at, updated_at=self.at)
        self._bump()
        return stored

    async def get(self, client_id: str) -> RegisteredClient | None:
        self._reach()
        return self.clients.get(client_id)

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        self._reach()
        self.reads += 1
        return tuple(self.clients[name] for name in sorted(self.clients))

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        self._reach()
        client = self.clients.get(client_id)
        if client is None:
            return None
        stored = self.clients[client_id] = replace(client, disabled=disabled, updated_at=at)
        self._bump()
        return stored

    async def remove(self, client_id: str) -> bool:
        self._reach()
        if self.clients.pop(client_id, None) is None:
            return False
        self._bump()
        return True
