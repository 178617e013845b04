"""OpenTelemetry setup and the span helpers every layer uses (RPC, engine call, DB transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from voltcloud.config import Settings

tracer = trace.get_tracer("voltcloud")
meter = metrics.get_meter("voltcloud")


def configure_tracing(settings: Settings) -> TracerProvider | None:
    """Installs the global tracer provider with the configured exporter; `none` keeps the no-op API."""
    if settings.tracing_exporter == "none":
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    exporter: SpanExporter
    if settings.tracing_exporter == "console":
        exporter = ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


@contextmanager
def engine_span(operation: str, **attributes: str | int | float | bool) -> Iterator[trace.Span]:
    """A span around one call into the Rust engine."""
    with tracer.start_as_current_span(f"engine.{operation}", attributes=attributes) as span:
        yield span
