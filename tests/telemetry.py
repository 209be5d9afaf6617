"""OpenTelemetry in the test process: ``spans`` turns tracing on with the SDK's in-memory exporter for one test
(instrumentations included) and off afterwards. Helpers read the finished spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.kit.telemetry import telemetry_setup, telemetry_stop


@pytest.fixture
def spans() -> Iterator[Any]:
    """The in-memory exporter receiving every span this test's code ends (tracing is on for the test only).

    Ask for it before fixtures that make requests through Django's test client: a client handler keeps the
    middleware it loaded at its first request, and Django's instrumentation is a middleware."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # A new exporter per test (the process's one provider keeps the processors of the earlier ones, shut: they
    # take no more spans, e.g. from a connection a background thread opened while tracing was on).
    exporter = InMemorySpanExporter()
    telemetry_setup(exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry_stop()
        exporter.shutdown()


def named(exporter: Any, prefix: str) -> list[Any]:
    """The finished spans whose name starts with ``prefix``."""
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
