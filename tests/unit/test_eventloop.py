"""Tests for broker._eventloop: which event loop the commands run on, and the fallback when uvloop is missing."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
import uvloop

from broker import _eventloop
from broker._eventloop import EVENT_LOOP_ENV, EventLoopUnavailableError, loop_factory, loop_name, run
from broker.errors import ConfigError


async def current_loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import uvloop`` fail, as on a platform it is not built for (None in sys.modules: ImportError)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def test_auto_runs_on_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert loop_factory() is uvloop.new_event_loop
    assert run(current_loop_name()) == "uvloop"


def test_asyncio_is_chosen_by_the_environment_even_where_uvloop_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert run(current_loop_name()) == "asyncio"


@pytest.mark.usefixtures("without_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    assert loop_factory("auto") is asyncio.new_event_loop
    assert run(current_loop_name(), choice="auto") == "asyncio"


@pytest.mark.usefixtures("without_uvloop")
def test_uvloop_asked_for_but_missing_is_a_clear_config_error_and_the_coroutine_is_closed() -> None:
    coroutine = current_loop_name()
    with pytest.raises(EventLoopUnavailableError, match="uvloop is not installed") as raised:
        run(coroutine, choice="uvloop")
    assert isinstance(raised.value, ConfigError)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # no "never awaited" warning


def test_an_unknown_choice_names_the_variable_and_the_choices() -> None:
    with pytest.raises(EventLoopUnavailableError, match=f"{EVENT_LOOP_ENV}='trio': expected one of auto, uvloop"):
        loop_factory("Trio")


def test_run_closes_its_loop_and_returns_the_result() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def remember() -> int:
        loops.append(asyncio.get_running_loop())
        return 7

    assert run(remember(), choice="uvloop") == 7
    assert loops[0].is_closed()
    assert _eventloop.loop_name(loops[0]) == "uvloop"
