"""Optional OpenTelemetry spans: sidecar -> token service -> store, propagated with W3C ``traceparent``.

Installed with ``pip install 'spiffe-broker[otel]'`` (``opentelemetry-api`` and ``-sdk``); without it every
function here does nothing and costs one ``if``. spiffe-broker uses only the OpenTelemetry *API*: where spans go
is the deployment's choice, made the standard way, e.g. ``opentelemetry-instrument spiffe-broker server`` with
``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter package is the operator's to install), or
an embedding program's own ``TracerProvider``, set before the token service starts (its request spans are
installed only then, :func:`configured`); until a provider is set, the API's spans are non-recording.

Spans (names are stable; attributes never hold a token, key, secret or ``jti``; a failure is recorded as
``error.type``, the exception's type, never its message):

* ``spiffe-broker.sidecar.exchange`` (CLIENT): one token exchange of the sidecar, with ``oauth.audience``; its
  request to the token service carries ``traceparent`` (W3C Trace Context, :func:`inject`).
* ``<METHOD> <route>`` (SERVER) on the token service: continues the caller's trace (:func:`server_span`), with
  ``http.request.method``, ``http.route``, ``http.response.status_code`` and ``spiffe_broker.outcome``.
* ``spiffe-broker.store.<operation>`` (INTERNAL): store work done for a request (the replay cache), and the
  issuance ledger's batch writes (a trace of their own: one batch serves many requests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the [otel] extra is not installed
    trace = None  # type: ignore[assignment]

__all__ = ["TRACER_NAME", "configured", "enabled", "inject", "server_span", "span"]

TRACER_NAME = "spiffe-broker"
Attributes = Mapping[str, str | int | float | bool]
# OpenTelemetry records an exception's message and traceback by default; a message may quote input or row values
# (a driver's DETAIL): a failed span says only the exception's type (:func:`_started`).
_NO_MESSAGES: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}


@contextlib.contextmanager
def _started(name: str, kind: Any, attributes: Attributes | None) -> Iterator[Any]:
    """The span, current while the block runs; a failure recorded by its type only."""
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes, **_NO_MESSAGES) as current:
        try:
            yield current
        except Exception as exc:
            current.set_attribute("error.type", type(exc).__name__)
            current.set_status(trace.Status(trace.StatusCode.ERROR))
            raise


def enabled() -> bool:
    """Whether the OpenTelemetry API is installed (spans are recorded only once a provider is configured)."""
    return trace is not None


def configured() -> bool:
    """Whether spans go anywhere: the API is installed and a tracer provider has been set (by
    ``opentelemetry-instrument`` or the embedding program). The token service installs its per-request
    middleware only then: a span nobody records still costs its context switches on every request."""
    return trace is not None and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextlib.contextmanager
def span(name: str, attributes: Attributes | None = None, *, client: bool = False) -> Iterator[Any]:
    """A span named ``name`` under the current one (a CLIENT span with ``client``); yields it, or None."""
    if trace is None:
        yield None
        return
    with _started(name, trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL, attributes) as current:
        yield current


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent`` (and ``tracestate``) for the current span to outgoing ``headers``."""
    if trace is not None:
        propagate.inject(headers)


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str], attributes: Attributes | None = None) -> Iterator[Any]:
    """A SERVER span continuing the trace named by the request's ``traceparent``, if any; yields it, or None."""
    if trace is None:
        yield None
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        with _started(name, trace.SpanKind.SERVER, attributes) as current:
            yield current
    finally:
        otel_context.detach(token)
