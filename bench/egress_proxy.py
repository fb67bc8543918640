"""The egress proxy of benchmark (j) in its own process, run until SIGTERM/SIGINT.

``python -m bench.egress_proxy --port N --target-port P --ca CA``: the sidecar's egress proxy as shipped
(:func:`broker.sidecar.egress.build_proxy` and :func:`~broker.sidecar.egress.start_egress`) on ``127.0.0.1:N``,
trusting only ``CA`` for targets, with two exceptions, ``Authorization: Bearer {secret}`` both: ``bench-api``
(``https://api.bench.example:P/v1/``) and ``bench-close`` (``https://close.bench.example:P/v1/``, the same target
under another name, so that the requests to ``/v1/small-close`` have a connection pool of their own). Its
:class:`~broker.sidecar.egress.ApiKeyLink` answers from memory (a grant held for an hour, reports dropped), so the
token service is not part of what is measured; both names resolve to 127.0.0.1
(:class:`~bench.egress_servers.LoopbackResolver`, in place of DNS). Logs at INFO.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.egress_servers import CLOSE_HOST, EXCEPTION, SECRET, TARGET_HOST, LoopbackResolver, until_signalled
from broker.apikeys.grant import Catalog, CatalogEntry, EgressReport, Grant
from broker.apikeys.model import Delivery, Presentation, Target
from broker.sidecar.egress import EgressOptions, build_proxy, start_egress

__all__ = ["MemoryLink", "main"]


class MemoryLink:
    """An :class:`~broker.sidecar.egress.ApiKeyLink` from memory: two exceptions, each granted for an hour."""

    def __init__(self, target_port: int) -> None:
        presentation = Presentation("header", "Authorization", "Bearer {secret}")
        self.entries = {
            name: CatalogEntry(name, Target(host, target_port, "/v1/"), presentation, Delivery.INJECT)
            for name, host in ((EXCEPTION, TARGET_HOST), ("bench-close", CLOSE_HOST))
        }
        self.grants = 0

    async def catalog(self) -> Catalog:
        return Catalog(tuple(self.entries.values()))

    async def grant(self, name: str) -> Grant:
        self.grants += 1
        now = datetime.fromtimestamp(time.time(), UTC)
        e = self.entries[name]
        return Grant(name, 1, SECRET, e.target, e.presentation, e.delivery, now, now + timedelta(hours=1))

    async def report(self, report: EgressReport) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def serve_proxy(port: int, target_port: int, ca_file: Path) -> None:
    link = MemoryLink(target_port)
    options = EgressOptions(port=port, ca_file=ca_file)
    running = await start_egress(link, options, proxy=build_proxy(link, options, resolver=LoopbackResolver()))
    try:
        await until_signalled()
    finally:
        await running.aclose()
        logging.getLogger(__name__).info("grants asked of the token service: %d", link.grants)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.egress_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_proxy(args.port, args.target_port, args.ca))


if __name__ == "__main__":
    main()
