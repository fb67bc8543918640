"""The scrape-time machinery: a failing collector costs only its own families, a slow store never stalls a
scrape, and a capped label stops at its cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric

from broker.metrics import OTHER, CappedLabel, ScrapeCollector, gauge_family, new_registry
from broker.server.metrics import APIKEY_READ_TIMEOUT, TokenServiceCollector


def test_a_collector_that_fails_part_way_serves_what_it_read_and_counts_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def read() -> Iterable[Metric]:
        yield gauge_family("first", "read before the failure", [], [((), 1.0)])
        raise RuntimeError("a message that must not be logged")

    registry = new_registry("test")
    registry.register(ScrapeCollector(read))

    first, second = generate_latest(registry).decode(), generate_latest(registry).decode()

    assert "spiffe_broker_first 1.0" in first
    assert "spiffe_broker_scrape_errors_total 1.0" in first and "spiffe_broker_scrape_errors_total 2.0" in second
    errors = [record for record in caplog.records if record.name == "broker.metrics"]
    assert len(errors) == 1 and "RuntimeError" in errors[0].getMessage()  # once, until a scrape succeeds
    assert "must not be logged" not in caplog.text


def test_a_capped_label_keeps_its_first_values_and_folds_the_rest() -> None:
    label = CappedLabel(2)
    assert [label(value) for value in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER, "a", OTHER]


class HangingRegistry:
    """An API-key registry whose store never answers."""

    def __init__(self) -> None:
        self.reads = 0

    async def list_all(self) -> tuple[Any, ...]:
        self.reads += 1
        await asyncio.sleep(3600)
        return ()


async def test_a_store_that_does_not_answer_delays_a_scrape_at_most_the_read_timeout_once_a_period() -> None:
    registry = HangingRegistry()
    collector = TokenServiceCollector(keyring=None, svid_memo=None, apikeys=registry)  # type: ignore[arg-type]

    started = time.monotonic()
    await collector.refresh()
    await collector.refresh()  # within the period: no second read
    elapsed = time.monotonic() - started

    assert registry.reads == 1
    assert APIKEY_READ_TIMEOUT <= elapsed < APIKEY_READ_TIMEOUT + 0.5
