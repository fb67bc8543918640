"""Token files (broker.sidecar.token_files): atomic writes, mode and owner, renewal, rotation, refusals."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker._files import write_atomically
from broker.identity.memory import InMemorySvidSource
from broker.jose.jws import parse_compact
from broker.sidecar.cache import TokenCache
from broker.sidecar.errors import TokenServiceRefusedError
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.token_files import TokenFile, TokenFileError, TokenFileKeeper, prepare_token_files
from broker.testing import FakeTokenService, ManualClock
from tests.unit.sidecar.sidecar_helpers import API, RealTokenService, wait_for


@pytest.fixture
async def keeper_for(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> AsyncIterator[Callable[..., tuple[TokenFileKeeper, asyncio.Task[None]]]]:
    """Start keepers over a cache fed by a given exchanger; everything is stopped at the end."""
    started: list[tuple[TokenCache, asyncio.Task[None]]] = []

    def start(exchanger: object, files: list[TokenFile]) -> tuple[TokenFileKeeper, asyncio.Task[None]]:
        cache = TokenCache(exchanger=exchanger, source=workload_source, clock=clock)  # type: ignore[arg-type]
        keeper = TokenFileKeeper(cache, workload_source, files, backoff_base=0.01, backoff_max=0.05)
        task = asyncio.create_task(keeper.run())
        started.append((cache, task))
        return keeper, task

    yield start
    for cache, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cache.aclose()


def content(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


async def file_holds(path: Path, expected: str) -> bool:
    await asyncio.sleep(0)
    return content(path) == expected


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "token"
    versions = [(chr(ord("a") + i % 26) * (4096 + 997 * i)).encode() for i in range(60)]
    write_atomically(target, versions[0], mode=0o600)
    seen: set[bytes] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for data in versions[1:]:
            write_atomically(target, data, mode=0o600)
    finally:
        done.set()
        reader.join(10)
    assert seen <= set(versions)  # every read is one whole version
    assert target.read_bytes() == versions[-1]
    assert os.listdir(tmp_path) == ["token"]  # no temporary file is left behind


def test_mode_and_owner_are_applied(tmp_path: Path) -> None:
    target = tmp_path / "token"
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    write_atomically(target, b"t", mode=0o640, uid=uid, gid=gid)
    info = os.stat(target)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, uid, gid)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "token"
    write_atomically(target, b"old", mode=0o600)
    with pytest.raises(OverflowError):
        write_atomically(target, b"new", mode=0o600, uid=2**40)  # fchown refuses: nothing is renamed
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["token"]


async def test_files_are_written_renewed_ahead_of_expiry_and_rewritten_on_rotation(
    keeper_for: Callable[..., tuple[TokenFileKeeper, asyncio.Task[None]]],
    workload_source: InMemorySvidSource,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    fake = FakeTokenService(workload_source)
    files = [TokenFile(tmp_path / "read", API, "orders:read"), TokenFile(tmp_path / "plain", "https://b")]
    keeper, _ = keeper_for(fake, files)
    await wait_for(lambda: file_holds(tmp_path / "read", "token-1"))
    await wait_for(lambda: file_holds(tmp_path / "plain", "token-2"))
    assert stat.S_IMODE(os.stat(tmp_path / "read").st_mode) == 0o600
    clock.advance(250)  # past the refresh point (80 % of 300 s), before expiry
    keeper.wake()
    await wait_for(lambda: file_holds(tmp_path / "read", "token-3"))
    await wait_for(lambda: file_holds(tmp_path / "plain", "token-4"))
    workload_source.rotate()  # tokens are bound to the SVID: new ones, without waiting for the refresh point
    await wait_for(lambda: file_holds(tmp_path / "read", "token-5"))
    await wait_for(lambda: file_holds(tmp_path / "plain", "token-6"))
    assert fake.calls[:2] == [(API, "orders:read"), ("https://b", None)]


async def test_while_the_token_service_is_away_the_current_file_stays(
    keeper_for: Callable[..., tuple[TokenFileKeeper, asyncio.Task[None]]],
    workload_source: InMemorySvidSource,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    from broker.sidecar.errors import TokenServiceUnavailableError

    fake = FakeTokenService(workload_source)
    keeper, _ = keeper_for(fake, [TokenFile(tmp_path / "t", API)])
    await wait_for(lambda: file_holds(tmp_path / "t", "token-1"))
    fake.failure = TokenServiceUnavailableError("token service unreachable")
    clock.advance(250)
    keeper.wake()
    await wait_for(lambda: asyncio.sleep(0, len(fake.calls) >= 3))  # refreshes are retried with backoff
    assert content(tmp_path / "t") == "token-1"
    fake.failure = None
    await wait_for(lambda: file_holds(tmp_path / "t", f"token-{len(fake.calls)}"))


async def test_write_once_with_the_real_token_service_writes_a_bound_token(
    workload_source: InMemorySvidSource, token_service: RealTokenService, tmp_path: Path
) -> None:
    client = TokenServiceClient(source=workload_source, issuer=token_service.issuer, server_id=lambda _: True)
    cache = TokenCache(exchanger=client, source=workload_source)
    keeper = TokenFileKeeper(cache, workload_source, [TokenFile(tmp_path / "t", API, "orders:write", mode=0o640)])
    await asyncio.wait_for(keeper.write_once(), 10)
    token = (tmp_path / "t").read_text()
    assert parse_compact(token).payload["cnf"]["x5t#S256"] == workload_source.x509_svid().x5t_s256()
    assert stat.S_IMODE(os.stat(tmp_path / "t").st_mode) == 0o640
    await cache.aclose()
    await client.aclose()


async def test_write_once_fails_at_once_on_a_refusal(workload_source: InMemorySvidSource, tmp_path: Path) -> None:
    fake = FakeTokenService(workload_source, failure=TokenServiceRefusedError("invalid_target", "not for you"))
    cache = TokenCache(exchanger=fake, source=workload_source)
    keeper = TokenFileKeeper(cache, workload_source, [TokenFile(tmp_path / "t", API)])
    with pytest.raises(TokenFileError, match="refused by the token service: invalid_target: not for you"):
        await asyncio.wait_for(keeper.write_once(), 5)
    assert not (tmp_path / "t").exists()
    await cache.aclose()


async def test_an_unwritable_directory_is_reported_once_per_file(
    workload_source: InMemorySvidSource, tmp_path: Path
) -> None:
    cache = TokenCache(exchanger=FakeTokenService(workload_source), source=workload_source)
    keeper = TokenFileKeeper(cache, workload_source, [TokenFile(tmp_path / "missing" / "t", API)], backoff_base=0.01)
    task = asyncio.create_task(keeper.write_once())
    await wait_for(lambda: asyncio.sleep(0, bool(keeper.problems())))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert keeper.problems() == [f"{tmp_path / 'missing' / 't'}: cannot write it: No such file or directory"]
    await cache.aclose()


@pytest.mark.parametrize("mode", [0o644, 0o602, 0o666, 0o604])
def test_a_mode_granting_others_any_access_is_refused_as_a_credential(tmp_path: Path, mode: int) -> None:
    with pytest.raises(TokenFileError, match="holds a credential"):
        TokenFile(tmp_path / "t", API, mode=mode)


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o772, 0o770])
def test_a_directory_others_may_write_to_is_refused_at_start(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(TokenFileError, match="writable by other users"):
        prepare_token_files([TokenFile(directory / "t", API)])


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o1770, 0o755])
def test_a_directory_only_its_owner_or_a_sticky_group_may_write_to_is_accepted(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    directory.chmod(mode)
    prepare_token_files([TokenFile(directory / "t", API), TokenFile(tmp_path / "missing" / "t", API)])


def test_temporaries_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    stale = [tmp_path / ".t.k3j_a9x1.tmp", tmp_path / ".t.x.tmp"]
    kept = [tmp_path / "t", tmp_path / ".other.abc.tmp", tmp_path / ".t.abc.tmp.keep", tmp_path / ".tx.abc.tmp"]
    for path in stale + kept:
        path.write_text("old")
    prepare_token_files([TokenFile(tmp_path / "t", API)])
    assert [p.exists() for p in stale + kept] == [False] * len(stale) + [True] * len(kept)
