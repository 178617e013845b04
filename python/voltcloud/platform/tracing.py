"""OpenTelemetry setup and the span helpers every layer uses (RPC, engine call, DB transaction)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
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

# Without an exporter no span is made at all: even OpenTelemetry's no-op span costs ~10-20 µs (proxy tracer,
# context attach/detach), several per quote (docs/benchmarks.md, "Quote intake"). Set by `configure_tracing`.
_spans = False
_NO_SPAN: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)  # stateless: reusable


def span(name: str, attributes: dict[str, str | int | float | bool]) -> AbstractContextManager[trace.Span]:
    """A span made current for the block when tracing is configured; otherwise a shared non-recording one."""
    if not _spans:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes, record_exception=False)


def configure_tracing(settings: Settings) -> TracerProvider | None:
    """Installs the global tracer and meter providers with the configured exporter (spans and metrics such
    as the QuotePowerUp latency histogram); `none` keeps the no-op API."""
    global _spans
    if settings.tracing_exporter == "none":
        return None
    _spans = True
    resource = Resource.create({"service.name": settings.service_name})
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    metric_exporter: MetricExporter
    if settings.tracing_exporter == "console":
        exporter = ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        metric_exporter = ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        metric_exporter = OTLPMetricExporter(endpoint=settings.otlp_endpoint, insecure=True)
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=settings.metrics_interval_ms)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    return provider


def engine_span(operation: str, **attributes: str | int | float | bool) -> AbstractContextManager[trace.Span]:
    """A span around one call into the Rust engine (none without an exporter)."""
    if not _spans:
        return _NO_SPAN
    return tracer.start_as_current_span(f"engine.{operation}", attributes=attributes)
