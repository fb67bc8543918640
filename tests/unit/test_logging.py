"""Tests for broker._logging's formatters: the text line's time is what logging.Formatter writes."""

from __future__ import annotations

import logging

import pytest

from broker._logging import TextFormatter


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    return record


@pytest.mark.parametrize(
    "times",
    [[1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25], [0.0, 86_399.999, 1_000_000.0]],
    ids=["same-second-then-next-then-back", "epoch-and-day-edges"],
)
def test_text_time_is_what_logging_formatter_writes(times: list[float]) -> None:
    ours, reference = TextFormatter(), logging.Formatter()
    for created in times:
        assert ours.formatTime(_record(created)) == reference.formatTime(_record(created))


def test_text_time_with_a_datefmt_is_logging_formatter_s() -> None:
    record = _record(1_700_000_000.5)
    assert TextFormatter().formatTime(record, "%H:%M") == logging.Formatter().formatTime(record, "%H:%M")
