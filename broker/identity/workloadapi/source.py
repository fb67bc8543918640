"""An :class:`~broker.identity.source.SvidSource` fed by the SPIFFE Workload API, bridged into asyncio.

SPIFFE Workload Endpoint §4: the address is ``unix:///absolute/path`` or ``tcp://<ip>:<port>``. SPIFFE Workload
API §5-§6: every request carries the metadata ``workload.spiffe.io: true``; ``FetchX509SVID`` and
``FetchJWTBundles`` are server streams that send the complete state on every change (the first SVID of a
response is the default one); ``FetchJWTSVID`` is unary. Clients retry with backoff, PermissionDenied included
(the workload may be registered later).

py-spiffe 0.3.2 is synchronous and thread based. Its ``X509Source``/``JwtSource`` are not used: they block in
the constructor, close themselves for good on any non-gRPC error, retry silently (no state to log) without
jitter, run daemon threads nobody can join, and hand out parsed objects only (losing the JWKS ``use`` member and
strict SPIFFE ID parsing). This module drives py-spiffe's generated stub (``spiffe._proto``: a process may load
``workload.proto`` only once) on its own gRPC channel. Each connection attempt of a stream is read by a daemon
thread that hands every parsed response to the loop with ``loop.call_soon_threadsafe``; reconnection, backoff,
state and subscribers live on the loop. ``FetchJWTSVID`` uses gRPC's non-blocking future API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]

from broker._backoff import Attempts, Backoff
from broker.config import ENDPOINT_SOCKET_ENV, normalize_address, workload_api_address
from broker.identity.bundle import JwtBundle, JwtBundleSet, X509Bundle, X509BundleSet
from broker.identity.errors import IdentityError, SvidUnavailableError
from broker.identity.spiffeid import TrustDomain
from broker.identity.svid import JwtSvid, X509Svid
from broker.identity.workloadapi.messages import (
    jwt_bundles_from_response,
    jwt_svid_from_token,
    x509_context_from_response,
)
from broker.identity.workloadapi.pb import (
    WORKLOAD_METADATA,
    WorkloadApiStub,
    describe_rpc_error,
    grpc_target,
    workload_pb2,
)

__all__ = [
    "ENDPOINT_SOCKET_ENV",
    "WorkloadApiSvidSource",
    "jwt_bundles_from_response",
    "jwt_svid_from_token",
    "normalize_address",
    "workload_api_address",
    "x509_context_from_response",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _digest(message: Any) -> bytes:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


class WorkloadApiSvidSource:
    """X.509-SVID, bundles and JWT-SVIDs from the SPIFFE Workload API (a SPIRE agent), for asyncio code.

    :meth:`start` opens the streams (on the running loop); :meth:`wait_ready` waits for the first X.509-SVID and
    JWT bundles. The last good X.509-SVID is kept while the Workload API is away, until its notAfter; streams
    reconnect with exponential backoff and jitter; state changes (connected, lost, reconnected) are logged once.
    """

    def __init__(
        self,
        *,
        address: str,
        first_svid_timeout: float = 10.0,
        backoff_min: float = 0.2,
        backoff_max: float = 10.0,
        jwt_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = normalize_address(address)
        self._first_svid_timeout, self._jwt_timeout, self._clock = first_svid_timeout, jwt_timeout, clock
        self._backoff = (backoff_min, backoff_max)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: Any = None
        self._stub: Any = None
        self._svid: X509Svid | None = None
        self._x509_bundles: dict[TrustDomain, X509Bundle] = {}
        self._jwt_bundles: dict[TrustDomain, JwtBundle] = {}
        self._digests: dict[str, bytes] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._jwt_cache: dict[str, tuple[JwtSvid, float]] = {}
        self._jwt_inflight: dict[str, asyncio.Task[JwtSvid]] = {}
        self._up = {"x509": False, "jwt_bundles": False}
        self._state, self._last_error = "starting", "no answer yet"
        self._lock = threading.Lock()  # guards _calls, shared with reader threads
        self._calls: set[Any] = set()
        self._threads: set[threading.Thread] = set()
        self._busy: set[threading.Thread] = set()  # threads whose outcome has not reached the loop yet
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = threading.Event()
        self._ready = asyncio.Event()

    def __repr__(self) -> str:
        return f"WorkloadApiSvidSource(address={self.address!r}, state={self._state!r})"

    @property
    def state(self) -> str:
        """``starting``, ``waiting`` (never reached yet), ``connected``, ``disconnected`` or ``closed``."""
        return self._state

    async def start(self) -> None:
        """Open the channel and the X.509 and JWT-bundle streams; returns at once. Idempotent."""
        if self._stop.is_set():
            raise SvidUnavailableError(f"the Workload API source for {self.address} is closed")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        low, high = (int(seconds * 1000) for seconds in self._backoff)
        options = [
            ("grpc.initial_reconnect_backoff_ms", low),
            ("grpc.min_reconnect_backoff_ms", low),
            ("grpc.max_reconnect_backoff_ms", high),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._channel = grpc.insecure_channel(grpc_target(self.address), options=options)
        self._stub = WorkloadApiStub(self._channel)
        self._tasks = [asyncio.create_task(self._supervise(name)) for name in self._up]

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait (``first_svid_timeout`` by default) for the first X.509-SVID and JWT bundles."""
        await self.start()
        limit = self._first_svid_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._ready.wait(), limit)
        except TimeoutError:
            what = "JWT bundles" if self._svid is not None else "X.509-SVID"
            raise SvidUnavailableError(
                f"no {what} from the Workload API at {self.address} within {limit:g}s: is the agent running and "
                f"is this workload registered? (last error: {self._last_error})"
            ) from None

    async def __aenter__(self) -> WorkloadApiSvidSource:
        try:
            await self.wait_ready()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def x509_svid(self) -> X509Svid:
        svid = self._svid
        if svid is None:
            raise SvidUnavailableError(f"no X.509-SVID from the Workload API at {self.address} yet")
        if self._clock() >= svid.not_after.timestamp():
            raise SvidUnavailableError(
                f"the last X.509-SVID from the Workload API at {self.address} expired at "
                f"{svid.not_after.isoformat()} and no newer one arrived (last error: {self._last_error})"
            )
        return svid

    def x509_bundles(self) -> X509BundleSet:
        return dict(self._x509_bundles)

    def jwt_bundles(self) -> JwtBundleSet:
        return dict(self._jwt_bundles)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop whenever the X.509-SVID, X.509 bundles or JWT bundles change."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        """A JWT-SVID for ``audience``, cached until half its lifetime has passed (as SPIRE's agent does); while
        the Workload API cannot be reached a cached one is returned until it expires."""
        if not audience:
            raise ValueError("audience must not be empty")
        cached = self._jwt_cache.get(audience)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        task = self._jwt_inflight.get(audience)
        if task is None:  # concurrent callers for one audience share one call
            task = self._jwt_inflight[audience] = asyncio.create_task(self._fetch_jwt_svid(audience))
            task.add_done_callback(self._jwt_fetched)
        try:
            return await asyncio.shield(task)
        except SvidUnavailableError:
            if cached is not None and self._clock() < cached[0].expiry:
                return cached[0]  # the Workload API is away: the cached JWT-SVID is still valid
            raise

    async def aclose(self) -> None:
        """Cancel the streams and pending calls, wait for every thread to end, close the channel. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()
        for task in [*self._tasks, *self._jwt_inflight.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._jwt_inflight.values(), return_exceptions=True)
        if self._channel is not None:
            await self._in_thread("close", self._channel.close)
        with contextlib.suppress(TimeoutError):  # every call is cancelled: the threads finish within milliseconds
            await asyncio.wait_for(self._idle.wait(), 5.0)
        for thread in self._threads - self._busy:
            thread.join()  # each has handed its outcome back and is returning
        self._threads.clear()
        self._subscribers.clear()
        self._state = "closed"

    # -- streams: a supervisor task on the loop, one reader thread per connection attempt ----------------------

    async def _supervise(self, name: str) -> None:
        backoff = Attempts(Backoff(*self._backoff))  # delays in [d/2, d], d doubling from min up to max

        def deliver(parsed: tuple[bytes, Any]) -> None:
            if not self._stop.is_set():
                backoff.reset()
                self._apply(name, *parsed)
                self._stream_up(name)

        while True:
            try:
                await self._in_thread(name, lambda: self._read_stream(name, deliver))
                reason = "the stream ended"
            except Exception as exc:  # gRPC status or a response we could not use
                reason = describe_rpc_error(exc)
            delay = backoff.next()
            self._stream_down(name, reason, delay)
            await asyncio.sleep(delay)  # aclose() cancels this task

    def _read_stream(self, name: str, deliver: Callable[[tuple[bytes, Any]], None]) -> None:
        """In a thread: read one stream until it ends or fails, handing each parsed response to the loop."""
        if name == "x509":
            call = self._stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=WORKLOAD_METADATA)
            parse: Callable[[Any], Any] = x509_context_from_response
        else:
            call = self._stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=WORKLOAD_METADATA)
            parse = jwt_bundles_from_response
        with self._lock:
            if self._stop.is_set():
                call.cancel()
                return
            self._calls.add(call)
        try:
            for response in call:
                parsed = (_digest(response), parse(response))
                assert self._loop is not None
                self._loop.call_soon_threadsafe(deliver, parsed)
        finally:
            with self._lock:
                self._calls.discard(call)
            call.cancel()

    def _in_thread(self, name: str, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run blocking ``fn`` in a new daemon thread; its outcome comes back through ``call_soon_threadsafe``."""
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[_T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            self._busy.discard(thread)
            if not self._busy:
                self._idle.set()
            if not future.done():
                (future.set_result if ok else future.set_exception)(value)

        def run() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except Exception as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, *outcome)

        thread = threading.Thread(target=run, name=f"wlapi-client-{name}", daemon=True)
        self._threads = {t for t in self._threads if t.is_alive()} | {thread}
        self._busy.add(thread)
        self._idle.clear()
        thread.start()
        return future

    def _apply(self, name: str, digest: bytes, parsed: Any) -> None:
        """Take a stream's new state; each message repeats the full state, so unchanged ones are skipped."""
        if self._digests.get(name) == digest:
            return
        self._digests[name] = digest
        if name == "x509":
            self._svid, self._x509_bundles = parsed
            svid = parsed[0]
            _log.debug("X.509-SVID %s serial %x, expires %s", svid.spiffe_id, svid.leaf.serial_number, svid.not_after)
        else:
            self._jwt_bundles = parsed
        if self._svid is not None and self._jwt_bundles:
            self._ready.set()
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                _log.exception("a Workload API subscriber failed")

    # -- connection state, logged once per change (retries only at DEBUG) ---------------------------------------

    def _stream_up(self, name: str) -> None:
        self._up[name] = True
        if all(self._up.values()) and self._state != "connected":
            verb = "reconnected to" if self._state == "disconnected" else "connected to"
            expiry = self._svid.not_after.isoformat() if self._svid else "?"
            _log.info("%s the Workload API at %s (X.509-SVID expires %s)", verb, self.address, expiry)
            self._state = "connected"

    def _stream_down(self, name: str, reason: str, delay: float) -> None:
        self._up[name] = False
        self._last_error = reason
        _log.debug("Workload API %s stream at %s: %s; retrying in %.2fs", name, self.address, reason, delay)
        if self._state == "connected":
            expiry = self._svid.not_after.isoformat() if self._svid else "?"
            _log.warning(
                "lost the Workload API at %s: %s; keeping the X.509-SVID that expires %s; reconnecting",
                *(self.address, reason, expiry),
            )
            self._state = "disconnected"
        elif self._state == "starting":
            _log.warning("the Workload API at %s is not available yet: %s; retrying", self.address, reason)
            self._state = "waiting"

    # -- JWT-SVIDs -------------------------------------------------------------------------------------------

    async def _fetch_jwt_svid(self, audience: str) -> JwtSvid:
        await self.start()
        request = workload_pb2.JWTSVIDRequest(audience=[audience])
        call = self._stub.FetchJWTSVID.future(request, metadata=WORKLOAD_METADATA, timeout=self._jwt_timeout)
        try:
            response = await self._grpc_result(call)
            if not response.svids:
                raise IdentityError("the JWTSVIDResponse holds no SVID")
            svid = jwt_svid_from_token(response.svids[0].svid, audience)
        except (grpc.RpcError, IdentityError) as exc:
            reason = describe_rpc_error(exc)
            raise SvidUnavailableError(
                f"no JWT-SVID for audience {audience!r} from the Workload API at {self.address}: {reason}"
            ) from None
        now = self._clock()
        iat = svid.claims.get("iat")
        issued = iat if isinstance(iat, int) and not isinstance(iat, bool) and iat <= now else now
        self._jwt_cache[audience] = (svid, issued + (svid.expiry - issued) / 2)
        return svid

    def _jwt_fetched(self, task: asyncio.Task[JwtSvid]) -> None:
        self._jwt_inflight = {aud: t for aud, t in self._jwt_inflight.items() if t is not task}
        if not task.cancelled():
            task.exception()  # marks it retrieved; every waiter receives it through its shield

    async def _grpc_result(self, call: Any) -> Any:
        """Await a gRPC future without blocking: its done-callback (a gRPC thread) wakes the loop."""
        loop = self._loop
        assert loop is not None
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle)

        call.add_done_callback(wake)
        try:
            await done
        finally:
            call.cancel()
        return call.result()
