"""The export helper of traces (``python -m failsoft.tracing_export``, started by failsoft/tracing.py):
reads batches of finished spans from stdin (4-byte length, then msgpack), turns them into the
OpenTelemetry SDK's spans and exports them with the exporter the OTEL_* variables name (OTLP/HTTP by
default, or console). Encoding and sending happen here, never in the serving process. At EOF it
flushes and ends; a batch that cannot be exported is dropped (the exporter retries within its timeout)."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["readable"]


def readable(records: list[Any], resource: Any) -> list[Any]:
    """The SDK's ReadableSpans of span records (failsoft/tracing.py's ``Span.record``)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    scope = InstrumentationScope("failsoft")
    kinds = {0: SpanKind.INTERNAL, 1: SpanKind.SERVER, 2: SpanKind.CLIENT}
    sampled = TraceFlags(TraceFlags.SAMPLED)
    spans = []
    for name, kind, trace_id, span_id, parent_id, start, end, attributes, error in records:
        trace = int(trace_id, 16)
        context = SpanContext(trace, span_id, is_remote=False, trace_flags=sampled)
        parent = SpanContext(trace, parent_id, is_remote=True, trace_flags=sampled) if parent_id else None
        status = Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET)
        kind_of = kinds.get(kind, SpanKind.INTERNAL)
        span = ReadableSpan(name, context=context, parent=parent, resource=resource, attributes=attributes,
                            kind=kind_of, status=status, start_time=start, end_time=end,
                            instrumentation_scope=scope)  # fmt: skip
        spans.append(span)
    return spans


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*


def main() -> int:
    import signal

    import msgspec
    from opentelemetry.sdk.resources import Resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when the serving process closes its stdin
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "failsoft")})
    exporter = _exporter()
    decode = msgspec.msgpack.Decoder().decode
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            break
        frame = stdin.read(int.from_bytes(head, "big"))
        try:
            exporter.export(readable(decode(frame), resource))
        except Exception:  # an exporter's failure costs its batch, never the helper
            continue
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
