"""The export helper of traces (``python -m failsoft.tracing_export``, started by failsoft/tracing.py):
reads batches of finished spans from stdin (4-byte length, then msgpack) and exports them with the
exporter the OTEL_* variables name (OTLP/HTTP by default, or console). Encoding and sending happen here,
never in the serving process, and the helper runs at a lower CPU priority than the gateway: when the
machine is short of CPU, answers come first and spans wait (failsoft/tracing.py drops them past its
queue). At EOF it flushes and ends; a batch that cannot be exported is dropped (the exporter retries
within its timeout).

The OTLP request is built here from the records with the protocol's own message types
(``opentelemetry-proto``), attributes that repeat (a model's name, a tier's) made once: ~3 µs a span,
where turning records into the SDK's spans and encoding them with the SDK's encoder costs ~22 µs. The
exporter's HTTP client then sends the bytes with its retries, headers, compression and TLS from
OTEL_EXPORTER_OTLP_*. A test holds the encoding equal to the SDK's (``encode_spans(readable(...))``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Encoder", "readable"]

# nice(2) increment of the helper: tracing yields the CPU to answering
NICENESS = 10


def readable(records: list[Any], resource: Any) -> list[Any]:
    """The SDK's ReadableSpans of span records (failsoft/tracing.py's ``Span.record``): what an exporter
    other than OTLP/HTTP (console, the tests' in-memory one) is given."""
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
        # a server span's parent is the caller's; every other span's is one of ours
        parent = (
            SpanContext(trace, parent_id, is_remote=kind == 1, trace_flags=sampled) if parent_id else None
        )
        status = Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET)
        kind_of = kinds.get(kind, SpanKind.INTERNAL)
        span = ReadableSpan(name, context=context, parent=parent, resource=resource, attributes=attributes,
                            kind=kind_of, status=status, start_time=start, end_time=end,
                            instrumentation_scope=scope)  # fmt: skip
        spans.append(span)
    return spans


class Encoder:
    """Span records into the bytes of an OTLP ``ExportTraceServiceRequest``, as the SDK's encoder would
    write them for the same spans."""

    MAX_KEPT = 4096  # attribute pairs kept made (a few per model and tier)

    def __init__(self, resource: Any) -> None:
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource
        from opentelemetry.proto.trace.v1 import trace_pb2

        self._any, self._key_value = AnyValue, KeyValue
        self._trace = trace_pb2
        self._resource = Resource(attributes=[self._pair(k, v) for k, v in resource.attributes.items()])
        self._schema = resource.schema_url or ""
        self._kept: dict[tuple[str, type, Any], Any] = {}

    def _pair(self, key: str, value: Any) -> Any:
        any_value = self._any
        if isinstance(value, bool):
            return self._key_value(key=key, value=any_value(bool_value=value))
        if isinstance(value, int):
            return self._key_value(key=key, value=any_value(int_value=value))
        if isinstance(value, float):
            return self._key_value(key=key, value=any_value(double_value=value))
        return self._key_value(key=key, value=any_value(string_value=str(value)))

    def pair(self, key: str, value: Any) -> Any:
        """The KeyValue message of one attribute, made once for a pair that repeats."""
        kept = self._kept
        cache_key = (key, type(value), value)
        made = kept.get(cache_key)
        if made is None:
            if len(kept) >= self.MAX_KEPT:
                kept.clear()
            made = kept[cache_key] = self._pair(key, value)
        return made

    def encode(self, records: list[Any]) -> bytes:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        trace_pb2, pair = self._trace, self.pair
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add(schema_url=self._schema)
        resource_spans.resource.CopyFrom(self._resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "failsoft"
        add = scope_spans.spans.add
        has_remote = trace_pb2.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
        is_remote = trace_pb2.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
        for name, kind, trace_id, span_id, parent_id, start, end, attributes, error in records:
            span = add(
                trace_id=bytes.fromhex(trace_id),
                span_id=span_id.to_bytes(8, "big"),
                name=name,
                kind=kind + 1,  # ours: internal 0, server 1, client 2; OTLP's: 1, 2, 3
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=[pair(k, v) for k, v in attributes.items()],
                flags=has_remote | (is_remote if kind == 1 and parent_id else 0),
            )
            if parent_id:
                span.parent_span_id = parent_id.to_bytes(8, "big")
            if error:
                span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
                span.status.message = error
            else:
                span.status.SetInParent()  # an empty status, as the SDK writes an unset one
        encoded: bytes = request.SerializeToString()
        return encoded


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*


def sender(exporter: Any, resource: Any) -> Callable[[list[Any]], object]:
    """How a batch of records leaves: encoded here and sent by the OTLP exporter's own HTTP client, or,
    for another exporter (or an OTLP exporter without that client), as the SDK's spans."""
    client = getattr(exporter, "_client", None)
    send = getattr(client, "export", None)
    if callable(send):
        encode = Encoder(resource).encode
        return lambda records: send(encode(records))
    return lambda records: exporter.export(readable(records, resource))


def main() -> int:
    import signal

    import msgspec
    from opentelemetry.sdk.resources import Resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when the serving process closes its stdin
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # not allowed here: the same priority as the gateway
        os.nice(NICENESS)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "failsoft")})
    exporter = _exporter()
    send = sender(exporter, resource)
    decode = msgspec.msgpack.Decoder().decode
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            break
        frame = stdin.read(int.from_bytes(head, "big"))
        try:
            send(decode(frame))
        except Exception:  # an exporter's failure costs its batch, never the helper
            continue
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
