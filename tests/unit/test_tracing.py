"""OpenTelemetry spans (the ``[otel]`` extra): one trace from the sidecar's exchange to the token service's
``/token`` span, its W3C ``traceparent`` carried between them; the ledger's store write in a span of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker import tracing
from broker.devtools.stack import DevStack
from tests.unit.dev_stack_helpers import ask_sidecar, dev_stack, token_of

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry refuses to replace it), exporting to memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
async def stack(tmp_path: Path, spans: InMemorySpanExporter) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


async def get_token(stack: DevStack) -> str:
    status, body = await ask_sidecar(stack, stack.demo_audience)
    assert status == 200
    return token_of(body)


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.name == name]


def test_the_api_is_installed_with_the_test_extra() -> None:
    assert tracing.enabled()


async def test_the_token_service_span_continues_the_sidecars_trace(
    stack: DevStack, spans: InMemorySpanExporter
) -> None:
    await get_token(stack)

    [exchange] = named(spans, "spiffe-broker.sidecar.exchange")
    [token] = named(spans, "POST /token")
    assert exchange.kind is trace.SpanKind.CLIENT and token.kind is trace.SpanKind.SERVER
    assert exchange.context is not None and token.context is not None and token.parent is not None
    assert token.context.trace_id == exchange.context.trace_id
    assert token.parent.span_id == exchange.context.span_id
    assert token.parent.is_remote  # it came over the wire, in traceparent
    assert exchange.attributes is not None and exchange.attributes["oauth.audience"] == stack.demo_audience
    assert token.attributes is not None
    assert (token.attributes["http.response.status_code"], token.attributes["spiffe_broker.outcome"]) == (200, "ok")


async def test_a_refused_exchange_is_traced_with_its_error_code(stack: DevStack, spans: InMemorySpanExporter) -> None:
    status, _ = await ask_sidecar(stack, "spiffe://example.org/nope")
    assert status == 403

    [token] = named(spans, "POST /token")
    assert token.attributes is not None and token.attributes["spiffe_broker.outcome"] == "invalid_target"


async def test_the_ledger_write_is_a_store_span_and_no_span_holds_the_token(
    stack: DevStack, spans: InMemorySpanExporter
) -> None:
    access_token = await get_token(stack)

    for _ in range(200):  # the ledger writes in batches (a 50 ms window): wait for it, at most 4 s
        if named(spans, "spiffe-broker.store.record_issuance"):
            break
        await asyncio.sleep(0.02)
    assert named(spans, "spiffe-broker.store.record_issuance")
    for span in spans.get_finished_spans():
        values = [str(value) for value in (span.attributes or {}).values()]
        assert not any(access_token in value or value.startswith("eyJ") for value in values), span.name


def test_a_failed_span_names_the_exception_type_never_its_message(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="secret-ish"), tracing.span("spiffe-broker.store.replay_add"):
        raise ValueError("row value secret-ish")

    [failed] = named(spans, "spiffe-broker.store.replay_add")
    assert failed.attributes is not None and failed.attributes["error.type"] == "ValueError"
    assert failed.status.status_code is trace.StatusCode.ERROR and not failed.status.description
    assert not failed.events  # no recorded exception event (it would carry the message)
