"""A fake token service for the sidecar: RFC 8693 exchanges and reachability probes without a network.

:class:`FakeTokenService` stands where the sidecar takes a
:class:`~broker.sidecar.app.TokenServiceLink` (the real one is
:class:`~broker.sidecar.exchanger.TokenServiceClient`). Its tokens are bound (RFC 8705 §3.1, ``x5t#S256``) to the
current X509-SVID of its source, as the real token service binds them to the client certificate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from broker.identity.memory import InMemorySvidSource
from broker.sidecar.health import TokenServiceHealth
from broker.sidecar.token_result import TokenResult

__all__ = ["FakeTokenService"]


@dataclass
class FakeTokenService:
    """A stand-in for TokenServiceClient: counts exchanges and probes, can hold them at a gate or fail them."""

    source: InMemorySvidSource
    lifetime: int = 300
    gate: asyncio.Event | None = None
    failure: BaseException | None = None
    reachable: bool = True
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    probes: int = 0
    closed: bool = False
    health: TokenServiceHealth = field(default_factory=lambda: TokenServiceHealth("https://fake.example"))

    async def exchange(self, audience: str, scope: str | None) -> TokenResult:
        self.calls.append((audience, scope))
        self.health.success()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return TokenResult(
            access_token=f"token-{len(self.calls)}",
            expires_in=self.lifetime,
            scope=scope,
            bound_x5t=self.source.x509_svid().x5t_s256(),
        )

    async def probe(self) -> bool:
        self.probes += 1
        if self.reachable:
            self.health.success()
        else:
            self.health.failure("fake: unreachable")
        return self.reachable

    async def aclose(self) -> None:
        self.closed = True
