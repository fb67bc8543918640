"""``spiffe-broker sidecar --egress-socket/--egress-port``: the flags, and the egress proxy of a sidecar process."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from broker.cli.main import main
from tests.unit.sidecar.sidecar_helpers import short_tmpdir
from tests.unit.sidecar.test_sidecar_command import STOP_WITHIN, Backdrop, Sidecar


@pytest.fixture(scope="module")
def backdrop() -> Iterator[Backdrop]:
    with short_tmpdir() as directory:
        running = Backdrop(directory)
        try:
            yield running
        finally:
            running.close()


def test_the_egress_flags_count_as_a_listener_and_are_refused_with_once() -> None:
    nothing = CliRunner().invoke(main, ["sidecar", "--token-service", "https://127.0.0.1:8443"])
    once = CliRunner().invoke(main, ["sidecar", "--token-service", "https://127.0.0.1:8443", "--egress-port", "0",
                                     "--once", "--token-file", "path=/tmp/t,audience=https://a"])  # fmt: skip

    assert (nothing.exit_code, once.exit_code) == (1, 1)
    assert "--egress-socket" in nothing.output
    assert "serves no egress proxy" in once.output


async def _forward(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get("http://api.example.test/v1/x", proxy=f"http://127.0.0.1:{port}") as response,
    ):
        return response.status, (await response.json())["error"]


def test_a_sidecar_with_only_egress_flags_serves_the_egress_proxy_until_sigterm(
    backdrop: Backdrop, tmp_short: Path
) -> None:
    socket = tmp_short / "egress.sock"
    sidecar = Sidecar("--egress-socket", f"unix://{socket}", "--egress-port", "0", "--token-service",
                      backdrop.token_service.issuer, "--workload-api", backdrop.wlapi.address)  # fmt: skip
    try:
        sidecar.wait_for_line("egress proxy (API-key injection) serving on")
        line = next(line for line in sidecar.lines if "egress proxy (API-key injection)" in line)
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match is not None
        mode = stat.S_IMODE(socket.stat().st_mode)
        status, error = asyncio.run(_forward(int(match[1])))
        returncode, elapsed, stderr = sidecar.signal_and_time(signal.SIGTERM)
    finally:
        sidecar.kill()

    assert mode == 0o600
    # Nothing is reachable through it: no exception covers the target (or the catalog is not there to say so).
    assert (status, error) in ((403, "target_not_covered"), (503, "temporarily_unavailable"))
    assert (returncode, elapsed < STOP_WITHIN) == (0, True), stderr
    assert "Traceback" not in stderr
    assert not socket.exists()
