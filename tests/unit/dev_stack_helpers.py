"""The dev stack as the observability tests use it: started on free ports in a test's directory, and an app's
``GET /v1/token`` to its sidecar."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from broker.config import load_settings
from broker.devtools.stack import DevStack, run_dev_stack

__all__ = ["ask_sidecar", "dev_stack", "token_of"]


@contextlib.asynccontextmanager
async def dev_stack(state_dir: Path, **more: Any) -> AsyncIterator[DevStack]:
    """Every part on a free port, state in ``state_dir``; ``more``: further settings sections (``metrics=...``)."""
    overrides = {"state_dir": state_dir, "server": {"port": 0}, "demo_api": {"port": 0}, **more}
    async with run_dev_stack(load_settings(None, overrides)) as running:
        yield running


async def ask_sidecar(stack: DevStack, audience: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The app's request for a token: the status and the body as text."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(stack.sidecar_socket))) as session,
        session.get("http://sidecar/v1/token", params={"audience": audience}, headers=headers) as response,
    ):
        return response.status, await response.text()


def token_of(body: str) -> str:
    """The access token of a ``/v1/token`` answer."""
    return str(json.loads(body)["access_token"])
