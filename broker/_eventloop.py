"""The event loop the broker's commands run on: uvloop when it is installed, else asyncio's own.

uvloop's transports, and its TLS layer in particular, are compiled: a TLS handshake and each request on a
keep-alive connection cost less server CPU than on asyncio's pure-Python ``sslproto`` (docs/benchmarks.md).
It is a dependency of the package on CPython/Linux and macOS, and still optional at run time:

* ``SPIFFE_BROKER_EVENT_LOOP=auto`` (the default): uvloop if it imports, else asyncio's loop, silently;
* ``SPIFFE_BROKER_EVENT_LOOP=uvloop``: uvloop or a clear error (:class:`EventLoopUnavailableError`);
* ``SPIFFE_BROKER_EVENT_LOOP=asyncio``: asyncio's loop even where uvloop is installed.

Nothing else in the broker depends on which loop runs it: both pass the whole test suite (``.ci/run`` runs it
on each).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, cast

from broker.errors import ConfigError

__all__ = ["EVENT_LOOP_ENV", "EventLoopUnavailableError", "loop_factory", "loop_name", "run"]

EVENT_LOOP_ENV = "SPIFFE_BROKER_EVENT_LOOP"

LoopChoice = Literal["auto", "uvloop", "asyncio"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_CHOICES: tuple[LoopChoice, ...] = ("auto", "uvloop", "asyncio")

_T = TypeVar("_T")


class EventLoopUnavailableError(ConfigError):
    """The event loop asked for by ``SPIFFE_BROKER_EVENT_LOOP`` is unknown or not installed."""


def _choice(value: str | None) -> LoopChoice:
    chosen = (value if value is not None else os.environ.get(EVENT_LOOP_ENV, "auto")).strip().lower() or "auto"
    if chosen not in _CHOICES:
        raise EventLoopUnavailableError(f"{EVENT_LOOP_ENV}={chosen!r}: expected one of {', '.join(_CHOICES)}")
    return chosen


def _uvloop_factory() -> LoopFactory | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    return cast(LoopFactory, uvloop.new_event_loop)


def loop_factory(choice: str | None = None) -> LoopFactory:
    """The factory of the loop to run on: ``choice``, else ``SPIFFE_BROKER_EVENT_LOOP``, else ``auto``."""
    chosen = _choice(choice)
    if chosen == "asyncio":
        return asyncio.new_event_loop
    factory = _uvloop_factory()
    if factory is not None:
        return factory
    if chosen == "uvloop":
        raise EventLoopUnavailableError(f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed")
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop ``loop`` is (for logs and ``status``)."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, _T], *, choice: str | None = None) -> _T:
    """Run ``main`` to completion on a new loop of the chosen kind (``asyncio.run`` semantics otherwise)."""
    try:
        factory = loop_factory(choice)
    except EventLoopUnavailableError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
