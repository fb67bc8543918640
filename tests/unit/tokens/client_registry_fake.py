"""The in-memory store's client registry (:class:`~broker.store.memory.MemoryClientRegistry`, held to the store
contract suite) with two test seams: ``failing`` makes every call raise as an unreachable store would, and
``reads`` counts ``list_all`` calls. ``clients`` is the twin's own dict, for a test that changes a registration
behind the change feed's back. Keys for tests: :func:`ec_jwk`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import StoreUnavailableError
from broker.jose.jwk import ec_public_jwk
from broker.store.memory import MemoryChangeFeed, MemoryClientRegistry
from broker.tokens.clients import RegisteredClient

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
LEGACY = "spiffe://example.org/legacy/billing"


def ec_jwk(kid: str = "k1") -> dict[str, Any]:
    """A fresh P-256 public JWK with ``kid``; ``private`` members are never included."""
    return {**ec_public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()), "kid": kid, "alg": "ES256"}


def inline_client(client_id: str = "billing", *kids: str) -> RegisteredClient:
    return RegisteredClient(client_id, LEGACY, jwks={"keys": [ec_jwk(kid) for kid in kids or ("k1",)]})


class FakeClientRegistry(MemoryClientRegistry):
    def __init__(self, changes: MemoryChangeFeed | None = None) -> None:
        super().__init__(MemoryChangeFeed() if changes is None else changes)
        self.failing = False
        self.reads = 0

    @property
    def clients(self) -> dict[str, RegisteredClient]:
        return self._clients

    def _reach(self) -> None:
        if self.failing:
            raise StoreUnavailableError("memory: the registry is down (test)")

    async def add(self, client: RegisteredClient, *, at: datetime | None = None) -> RegisteredClient:
        self._reach()
        return await super().add(client, at=at)

    async def get(self, client_id: str) -> RegisteredClient | None:
        self._reach()
        return await super().get(client_id)

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        self._reach()
        self.reads += 1
        return await super().list_all()

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        self._reach()
        return await super().set_disabled(client_id, disabled, at=at)

    async def remove(self, client_id: str) -> bool:
        self._reach()
        return await super().remove(client_id)
