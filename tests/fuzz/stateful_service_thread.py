"""The stateful token service (real SQLite store) over mTLS in a background thread, for synchronous hypothesis tests.

What ``spiffe-broker server`` runs (:func:`start_stateful_token_service`): ``/token``, ``/revoke``, ``/introspect``,
the revocation feed and the admin API on one TLS listener, the revocation log, ledger and audit journal in SQLite.
The service runs on its own event loop in a thread; :meth:`StatefulThread.run` calls into it (to read the store),
and every log record of the process is kept at DEBUG (:class:`~tests.fuzz.token_service_thread.LogRecorder`).

Callers (each an X.509-SVID from the dev CA, or none): the token's owner, another client, an admin, a resource
server on the introspection allow-list, one restricted to another audience, and an outsider on no list. The feed
is open to ``spiffe://example.org/ns/shop/*`` only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.revocations import LogEntry
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.keys import SigningKey
from broker.tokens.policy import FilePolicyStore
from broker.tokens.revocation import LogBehind
from broker.web import ListenerLimits
from tests.fuzz.token_service_thread import LogRecorder, send

BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
ISSUER = "https://broker.test:8443"
API = "https://api.example.org"
OTHER_API = "https://reports.example.org"
SCOPES = ("orders:read", "orders:write")
CALLERS = {
    "owner": SpiffeId.parse("spiffe://example.org/ns/shop/sa/web"),
    "other": SpiffeId.parse("spiffe://example.org/ns/shop/sa/other"),
    "admin": SpiffeId.parse("spiffe://example.org/ops/admin"),
    "rs": SpiffeId.parse("spiffe://example.org/ns/shop/sa/orders-api"),
    "rs_narrow": SpiffeId.parse("spiffe://example.org/ns/shop/sa/reports-api"),
    "outsider": SpiffeId.parse("spiffe://example.org/outside/x"),
}
FEED_PREFIX = "spiffe://example.org/ns/shop/*"

T = TypeVar("T")


def settings_overrides(directory: Path, store_url: str) -> dict[str, Any]:
    """The configuration both the tests and ``bench.fuzz_revocation_endpoints`` run with."""
    return {
        "state_dir": directory / "state",
        "store": {"url": store_url},
        "keyring": {"kek_file": directory / "kek"},
        "ledger": {"batch_window": 0.01},
        "admin": {"spiffe_ids": [str(CALLERS["admin"])]},
        "introspection": {
            "spiffe_ids": [str(CALLERS["rs"]), str(CALLERS["rs_narrow"])],
            "audiences": {str(CALLERS["rs_narrow"]): [OTHER_API]},
        },
        "feed": {"spiffe_ids": [FEED_PREFIX], "heartbeat": 0.5},
    }


def policy_text() -> str:
    rules = [policy_rule(spiffe_id=CALLERS[name], audiences=[API], scopes=SCOPES) for name in ("owner", "other")]
    return policy_yaml(*rules)


@dataclass
class StatefulThread:
    """The running service, its CA, a TLS context per caller and the recorded logs."""

    ca: DevCA
    directory: Path
    logs: LogRecorder
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    service: StatefulTokenService | None = None
    port: int = 0
    contexts: dict[str | None, ssl.SSLContext] = field(default_factory=dict)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the service's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def running(self) -> StatefulTokenService:
        assert self.service is not None
        return self.service

    def context(self, caller: str | None) -> ssl.SSLContext:
        """A client context for ``caller`` (a key of :data:`CALLERS`; None: no certificate)."""
        if caller not in self.contexts:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(cadata=self.ca.x509_bundle().to_pem().decode())
            if caller is not None:
                svid = self.ca.issue_x509_svid(CALLERS[caller], ttl=3600)
                (self.directory / f"{caller}.pem").write_bytes(svid.chain_pem())
                (self.directory / f"{caller}-key.pem").write_bytes(svid.key_pem())
                ctx.load_cert_chain(self.directory / f"{caller}.pem", self.directory / f"{caller}-key.pem")
            self.contexts[caller] = ctx
        return self.contexts[caller]

    def signing_key(self) -> SigningKey:
        return self.running.state.keyring.active_key()

    def mint(self, caller: str, audience: str = API) -> str:
        """A fresh access token for ``caller`` (``owner`` or ``other``) from ``/token``."""
        body = f"grant_type=client_credentials&audience={audience}&scope=orders%3Aread".encode()
        head = (
            "POST /token HTTP/1.1\r\nHost: broker.test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reply = send(self.context(caller), self.port, head + body)
        assert reply.status == 200, reply.body[:200]
        token: str = json.loads(reply.body)["access_token"]
        return token

    def entries_after(self, seq: int) -> tuple[LogEntry, ...]:
        """The revocation log's entries after ``seq``, read from the store."""

        async def read() -> tuple[LogEntry, ...]:
            try:
                return (await self.running.state.store.revocations.read(seq, limit=10_000)).entries
            except LogBehind:
                raise AssertionError("the revocation log was pruned during the fuzz run") from None

        return self.run(read())

    def log_head(self) -> int:
        async def head() -> int:
            return (await self.running.state.store.revocations.read(0, limit=1)).head

        return self.run(head())


def _serve(thread: StatefulThread, ready: threading.Event) -> None:
    asyncio.set_event_loop(thread.loop)

    async def start() -> None:
        generate_kek_file(thread.directory / "kek")
        (thread.directory / "policy.yaml").write_text(policy_text())
        store_url = f"sqlite:///{thread.directory / 'broker.db'}"
        thread.service = await start_stateful_token_service(
            load_settings(None, settings_overrides(thread.directory, store_url)),
            source=InMemorySvidSource(thread.ca, BROKER_ID),
            policy_store=FilePolicyStore(thread.directory / "policy.yaml"),
            issuer=ISSUER,
            listen_host="127.0.0.1",
            listen_port=0,
            limits=ListenerLimits(request_timeout=1.0),
        )
        thread.port = thread.service.port
        ready.set()

    thread.loop.run_until_complete(start())
    thread.loop.run_forever()
    thread.loop.run_until_complete(thread.running.aclose())
    leftover = asyncio.all_tasks(thread.loop)
    for task in leftover:
        task.cancel()
    thread.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    thread.loop.close()


@pytest.fixture(scope="module")
def stateful_service() -> Iterator[StatefulThread]:
    """The service for one test module, every log record of the process kept at DEBUG."""
    recorder = LogRecorder()
    root = logging.getLogger()
    saved = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    with tempfile.TemporaryDirectory(prefix="fuzz-stateful-") as directory:
        state = StatefulThread(DevCA.ephemeral("example.org"), Path(directory), recorder)
        ready = threading.Event()
        worker = threading.Thread(target=_serve, args=(state, ready), daemon=True)
        worker.start()
        assert ready.wait(30), "the stateful token service did not start"
        try:
            yield state
        finally:
            state.loop.call_soon_threadsafe(state.loop.stop)
            worker.join(30)
            root.removeHandler(recorder)
            root.setLevel(saved)
