"""The egress proxy alone in a process, so a test can measure its memory (``python -m`` this module).

A static catalog and grant stand in for the token service (one exception, ``stripe``, on ``api.example.test:PORT``);
the target is trusted through ``CA_FILE`` and every name resolves to 127.0.0.1. It logs at DEBUG to stderr (the
test looks for the secret there), prints its loopback port on stdout, and serves until its stdin is closed.

Usage: ``python -m tests.unit.sidecar.egress.proxy_process TARGET_PORT CA_FILE``
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.apikeys.grant import Catalog, EgressReport, Grant
from broker.sidecar.egress.service import EgressOptions, build_proxy, start_egress
from tests.unit.sidecar.egress.fake_apikeys import SECRET, entry
from tests.unit.sidecar.egress.target_server import LocalResolver


class StaticLink:
    """One exception, granted for an hour; reports are dropped."""

    def __init__(self, target_port: int) -> None:
        self.entry = entry("stripe", "api.example.test", target_port)

    async def catalog(self) -> Catalog:
        return Catalog((self.entry,))

    async def grant(self, name: str) -> Grant:
        now = datetime.fromtimestamp(time.time(), UTC)
        e = self.entry
        return Grant(name, 1, SECRET, e.target, e.presentation, e.delivery, now, now + timedelta(hours=1))

    async def report(self, report: EgressReport) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def serve(target_port: int, ca_file: Path) -> None:
    link = StaticLink(target_port)
    options = EgressOptions(port=0, ca_file=ca_file, report_interval=3600.0)
    running = await start_egress(link, options, proxy=build_proxy(link, options, resolver=LocalResolver()))
    print(running.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    await running.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
