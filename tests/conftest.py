"""The event loop the whole suite runs on: ``SPIFFE_BROKER_EVENT_LOOP=uvloop`` runs every async test (and, through
the environment, every CLI process a test starts) on uvloop; unset or ``asyncio``, asyncio's own loop.

``.ci/run`` runs the suite both ways (issue 14: no behaviour may depend on the loop). pytest-asyncio's hook
must name at least one factory whenever it is defined, so it is defined only when uvloop is asked for. Tests
marked ``standard_event_loop`` measure asyncio's own internals (its TLS protocol's buffer) and always run on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import pytest

from broker._eventloop import EVENT_LOOP_ENV, LoopFactory, loop_factory

if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() == "uvloop":

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
        """pytest-asyncio's hook: every async test and fixture on uvloop, but those marked ``standard_event_loop``."""
        if item.get_closest_marker("standard_event_loop") is not None:
            return {"asyncio": asyncio.new_event_loop}
        return {"uvloop": loop_factory("uvloop")}
