"""Token files: configured access tokens kept in files, for SDKs and tools that read a token from a file.

As Vault Agent's file sinks and spiffe-helper do, each configured (audience, scope) is kept in its own file:

* **Atomic**: the token goes to a temporary file in the target's directory, which gets its mode (and owner, if
  configured) and is fsync'd, then renamed over the target (``rename(2)`` is atomic within one file system), and
  the directory is fsync'd. A reader sees the previous token or the new one, never a partial file.
* **Renewed ahead of expiry**: at the cache's refresh point (:meth:`TokenCache.renew`); while the token service
  is away the current file stays until a refresh succeeds. Rewritten when the X.509-SVID rotates: the tokens are
  bound to it (RFC 8705 §3), and the cache drops the old ones.
* **Content**: the access token alone, no trailing newline (like Kubernetes projected service account tokens).
* Failures are logged once per change of state per file, never per retry, and never with the token.
* **A credential**: a token file's mode never grants others any access (no ``o+r``, no ``o+w``). At start
  (:func:`prepare_token_files`) a target directory that anyone may write to (world-writable, or group-writable
  without the sticky bit) is refused, since another user could replace or pre-create the file, and the
  ``.{name}.*.tmp`` files a crash left between write and rename are removed.

``--once`` (:meth:`TokenFileKeeper.write_once`) writes every file and returns, for init containers and Jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import random
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from broker._backoff import Backoff
from broker._files import write_atomically
from broker.errors import BrokerError
from broker.identity.source import Subscribable
from broker.oauth.grammar import normalize_scope
from broker.sidecar.cache import CachedToken, CacheKey, TokenCache
from broker.sidecar.errors import TokenServiceRefusedError

__all__ = ["TokenFile", "TokenFileError", "TokenFileKeeper", "prepare_token_files"]

log = logging.getLogger(__name__)


class TokenFileError(BrokerError):
    """The token files could not be written (in time); the description says why."""

    error = "token_file_error"


@dataclass(frozen=True, slots=True)
class TokenFile:
    """One token kept in ``path``: for ``audience`` (and ``scope``), with ``mode`` and optional ``uid``/``gid``."""

    path: Path
    audience: str
    scope: str | None = None
    mode: int = 0o600
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        if problem := mode_problem(self.mode):
            raise TokenFileError(f"{self.path}: {problem}")

    @property
    def key(self) -> CacheKey:
        """The cache key, with the scope normalised as ``/v1/token`` does (RFC 6749 §3.3: order is irrelevant)."""
        scope = normalize_scope(self.scope) if self.scope else None
        return self.audience, scope


def mode_problem(mode: int) -> str | None:
    """Why ``mode`` is refused for a token file (a credential: others get no access at all), or None."""
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return (
            f"mode {mode:04o} lets every user read or write the file, which holds a credential (a bearer "
            "access token): use 0600, or 0640 with a gid"
        )
    return None


def prepare_token_files(files: Iterable[TokenFile]) -> None:
    """At start: refuse a target directory others may write to, and remove temporaries a crash left.

    Raise :class:`TokenFileError`. A directory that does not exist yet is left to the keeper, which reports it.
    """
    for file in files:
        directory = file.path.parent
        try:
            mode = os.stat(directory).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TokenFileError(f"{directory}: cannot inspect the token file's directory: {exc.strerror}") from None
        if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not mode & stat.S_ISVTX):
            raise TokenFileError(
                f"{directory}: the token file's directory is writable by other users ({stat.S_IMODE(mode):04o}), "
                "who could replace the credential: use a directory only its owner (or group, with the sticky "
                "bit) may write to"
            )
        for stale in glob.glob(glob.escape(f"{directory}/.{file.path.name}.") + "*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
                log.info("removed %s, a temporary token file left by an earlier run", stale)


class TokenFileKeeper:
    """Keeps every :class:`TokenFile` written and fresh from a :class:`TokenCache`; see the module docstring."""

    def __init__(
        self,
        cache: TokenCache,
        source: Subscribable,
        files: Iterable[TokenFile],
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._cache, self._source, self._files = cache, source, tuple(files)
        self._backoff = Backoff(backoff_base, backoff_max, rng=rng)
        self._written: dict[Path, CachedToken] = {}
        self._problems: dict[Path, str] = {}
        self._refusals: dict[Path, str] = {}
        self._failures: dict[Path, int] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Check every file now (the SVID changed, or a test moved the clock)."""
        self._wake.set()

    async def run(self) -> None:
        """Keep the files fresh until cancelled."""
        unsubscribe = self._source.subscribe(self.wake)
        try:
            while True:
                self._wake.clear()
                delay = await self._pass()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            unsubscribe()

    async def write_once(self) -> None:
        """Write every file once, retrying with backoff; a refusal by the token service fails at once.

        Unbounded by itself: the caller bounds it (``--once`` has a timeout) and may cancel it.
        """
        while True:
            delay = await self._pass()
            if len(self._written) == len(self._files):
                return
            if self._refusals:
                path, problem = next(iter(self._refusals.items()))
                raise TokenFileError(f"{path}: {problem}")
            await asyncio.sleep(delay)

    def problems(self) -> list[str]:
        """Why files are not (freshly) written, one line each; empty when all are."""
        return [f"{path}: {problem}" for path, problem in self._problems.items()]

    async def _pass(self) -> float:
        """Renew and write every file; the seconds until the next pass is due."""
        delays = [await self._keep(file) for file in self._files]
        return max(min(delays, default=self._backoff.maximum), 0.0)

    async def _keep(self, file: TokenFile) -> float:
        try:
            entry = await self._cache.renew(file.key)
            if self._written.get(file.path) is not entry:
                await self._write(file, entry)
        except TokenServiceRefusedError as exc:
            self._refusals[file.path] = f"refused by the token service: {exc.error}: {exc.description}"
            return self._failed(file, self._refusals[file.path])
        except BrokerError as exc:
            return self._failed(file, exc.description or exc.error)
        except OSError as exc:
            return self._failed(file, f"cannot write it: {exc.strerror or type(exc).__name__}")
        self._refusals.pop(file.path, None)
        if self._problems.pop(file.path, None) is not None:
            log.info("token file %s is written again", file.path)
        self._failures.pop(file.path, None)
        wait = entry.refresh_at - self._cache.now()
        return wait if wait > 0 else self._delay(file)  # refresh failed, current token still valid: retry later

    async def _write(self, file: TokenFile, entry: CachedToken) -> None:
        data = entry.access_token.encode()
        await asyncio.to_thread(write_atomically, file.path, data, mode=file.mode, uid=file.uid, gid=file.gid)
        level = logging.DEBUG if file.path in self._written else logging.INFO  # the first write, then renewals
        self._written[file.path] = entry
        log.log(level, "wrote the token for %s to %s", file.audience, file.path)

    def _failed(self, file: TokenFile, problem: str) -> float:
        if self._problems.get(file.path) != problem:
            log.warning("token file %s: %s", file.path, problem)
        self._problems[file.path] = problem
        return self._delay(file)

    def _delay(self, file: TokenFile) -> float:
        count = self._failures.get(file.path, 0)
        self._failures[file.path] = count + 1
        return self._backoff.delay(count)
