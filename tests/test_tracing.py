"""OpenTelemetry traces (failsoft/tracing.py): off unless the OTEL_* variables ask; on, a request through a
real gateway to a remote tier makes one trace: the gateway's server span, the tier attempt's span, and the
backend's own span, joined by the traceparent the backend received (recorded by a backend under test),
exported over OTLP/HTTP to a real receiver on loopback; an incoming traceparent is honoured; the answer
carries the trace id; a collector that is down costs no answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from failsoft import tracing
from failsoft.demo.procs import free_port, serve_command, wait_http
from tests.http import get, post
from tests.portfolios import default_tier, model, write


def test_off_unless_the_variables_ask() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    )
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.TRACER is None and tracing.outgoing() is None and tracing.trace_id() is None


class Receiver:
    """An OTLP/HTTP receiver: every span exported to POST /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        received = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Backend:
    """A remote tier under test: it records the traceparent it receives and makes a span of its own
    under it (the SDK's in-memory exporter)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        tracer = provider.get_tracer("backend")
        self.traceparents: list[str | None] = []
        self.stopped = False
        seen = self.traceparents

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                seen.append(self.headers.get("traceparent"))
                context = TraceContextTextMapPropagator().extract(dict(self.headers))
                with tracer.start_as_current_span("backend score", context=context):
                    body = b'{"score": 0.7}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[str, Receiver, Backend, subprocess.Popen[bytes]]]:
    receiver, backend = Receiver(), Backend()
    remote = {"name": "remote", "kind": "http", "url": backend.url + "/score", "output_path": "score",
              "timeout_ms": 2000}  # fmt: skip
    churn = model(remote, default_tier(0.2), inputs=({"name": "x", "min": 0, "max": 10},), deadline_ms=3000)
    path = write(tmp_path, {"churn": churn})
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_SERVICE_NAME": "failsoft-test"}  # fmt: skip
    with (tmp_path / "gw.log").open("wb") as log:
        cmd = serve_command(path, port, log_level="info")
        gw = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", gw)
        yield f"http://127.0.0.1:{port}", receiver, backend, gw
    finally:
        if gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            gw.wait(30)
        for server in (receiver.server, *([] if backend.stopped else [backend.server])):
            server.shutdown()
            server.server_close()


def test_one_trace_from_the_caller_through_the_gateway_to_the_backend(
    traced: tuple[str, Receiver, Backend, subprocess.Popen[bytes]],
) -> None:
    url, receiver, backend, gw = traced
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    reply = post(url + "/v1/models/churn/predict", {"inputs": {"x": 3}},
                 headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})  # fmt: skip
    answer = reply.json()
    assert (answer["tier"], answer["outputs"], answer["trace_id"]) == ("remote", 0.7, caller_trace)
    # the latency histogram's bucket links to the trace (an OpenMetrics exemplar), for a scraper asking
    scraped = get(url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}).text
    assert re.search(r'failsoft_request_latency_seconds_bucket\{[^}]*model="churn"[^}]*\} 1\.0 # \{trace_id="'
                     + caller_trace, scraped), scraped[:2000]  # fmt: skip
    assert "# {" not in get(url + "/metrics").text, "Prometheus' text format has no exemplars"
    gw.send_signal(signal.SIGTERM)  # the stop flushes what is queued
    assert gw.wait(30) == 0
    spans = {s.name: s for s in receiver.spans}
    server, tier = spans["POST /v1/models/{model}/predict"], spans["tier remote"]
    assert server.trace_id.hex() == tier.trace_id.hex() == caller_trace
    assert server.parent_span_id.hex() == caller_span, "the caller's traceparent is the server span's parent"
    assert tier.parent_span_id == server.span_id
    attributes = {a.key: a.value for a in server.attributes}
    assert (
        attributes["failsoft.model"].string_value == "churn"
        and attributes["failsoft.tier"].string_value == "remote"
    )
    assert attributes["failsoft.degraded"].bool_value is False
    # the backend got the tier attempt's context and joined it
    # (the first call is the start-up proof that the tier answers, outside any request: no traceparent)
    assert backend.traceparents[1:] == [f"00-{caller_trace}-{tier.span_id.hex()}-01"]
    theirs = backend.exporter.get_finished_spans()[-1]
    assert format(theirs.context.trace_id, "032x") == caller_trace
    assert theirs.parent is not None and format(theirs.parent.span_id, "016x") == tier.span_id.hex()


def test_a_skip_has_its_span_and_its_log_line_the_trace_id(
    traced: tuple[str, Receiver, Backend, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, receiver, backend, gw = traced
    backend.server.shutdown()  # the remote tier's engine goes away: refused, then the default answers
    backend.server.server_close()
    backend.stopped = True
    answer = post(url + "/v1/models/churn/predict", {"inputs": {"x": 3}}).json()
    assert (answer["tier"], answer["degraded"], answer["reason"]) == ("default", True, "error")
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(30) == 0
    tier = next(s for s in receiver.spans if s.name == "tier remote")
    attributes = {a.key: a.value for a in tier.attributes}
    assert attributes["failsoft.reason"].string_value == "error" and tier.status.code == 2  # ERROR
    assert tier.trace_id.hex() == answer["trace_id"]
    lines = [json.loads(x) for x in (tmp_path / "gw.log").read_text().splitlines() if '"tier_skipped"' in x]
    assert lines and lines[0]["trace_id"] == answer["trace_id"]


def test_a_collector_that_is_down_costs_no_answer(tmp_path: Path) -> None:
    churn = model(default_tier(0.2), inputs=({"name": "x"},))
    path = write(tmp_path, {"churn": churn})
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}  # fmt: skip
    with (tmp_path / "gw.log").open("wb") as log:
        cmd = serve_command(path, port, log_level="info")
        gw = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", gw)
        replies = [
            post(f"http://127.0.0.1:{port}/v1/models/churn/predict", {"inputs": {"x": i}}) for i in range(50)
        ]
        assert [r.status_code for r in replies] == [200] * 50
        assert all(len(r.json()["trace_id"]) == 32 for r in replies)
    finally:
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(60) == 0


async def test_a_request_not_sampled_makes_no_span_and_passes_the_decision_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decision is made before any span is made: a request not sampled costs no span; a caller's trace
    not sampled goes on to the tiers behind flagged 00."""
    from failsoft.types import Outcome

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    exporter = InMemorySpanExporter()
    assert tracing.start(exporter)
    try:
        seen: list[dict[str, str] | None] = []

        async def answer() -> Outcome:
            seen.append(tracing.outgoing())
            return Outcome(id="r", model="m", version="1", tier="t", degraded=False, reason=None, outputs=1,
                           latency_ms=0.1)  # fmt: skip

        # a request of our own, not sampled: answered as if traces were off (no trace, nothing passed on)
        assert not tracing.traced([(b"host", b"x")])
        assert tracing.outgoing() is None and tracing.trace_id() is None
        caller = "4bf92f3577b34da6a3ce929d0e0e4736"
        unsampled = [(b"traceparent", f"00-{caller}-00f067aa0ba902b7-00".encode())]
        assert tracing.traced(unsampled)
        joined = await tracing.serve("POST /x", "m", unsampled, answer)
        assert joined.trace_id == caller and seen[0]["traceparent"].startswith(f"00-{caller}-")  # type: ignore[index]
        assert seen[0]["traceparent"].endswith("-00")  # type: ignore[index]
        # a caller that sampled decides for us (parent-based), whatever the ratio
        sampled = [(b"traceparent", f"00-{caller}-00f067aa0ba902b7-01".encode())]
        await tracing.serve("POST /x", "m", sampled, answer)
        tracing.stop()  # what is queued is shipped
        (span,) = exporter.get_finished_spans()  # the sampled request's alone
        assert format(span.context.trace_id, "032x") == caller and seen[1]["traceparent"].endswith("-01")  # type: ignore[index]
    finally:
        tracing.stop()


def test_the_helpers_encoding_is_the_sdks() -> None:
    """The export helper writes OTLP itself (six times cheaper than the SDK's spans and encoder); for
    the same records its request is the SDK's, field for field: a server span under a caller's trace, a
    client span under it, a failed one with its error, attributes of every type."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource

    from failsoft.tracing_export import Encoder, readable

    trace = f"{0x5B8AA5A2D2C872E8321CF37308D69DF2:032x}"
    records = [
        ("POST /v1/models/{model}/predict", 1, trace, 11, 0xB7AD6B7169203331, 100, 900,
         {"failsoft.model": "churn", "failsoft.tier": "cpu", "failsoft.degraded": False}, None),
        ("tier gbm", 2, trace, 12, 11, 200, 400,
         {"failsoft.tier": "gbm", "failsoft.rows": 3, "failsoft.degraded": True,
          "failsoft.reason": "timeout", "failsoft.share": 0.5}, "no answer within 1.0 ms"),
        ("skip gbm", 0, trace, 13, 11, 400, 400, {"failsoft.tier": "gbm"}, None),
        ("POST /v2/models/{model}/infer", 1, f"{7:032x}", 14, 0, 1, 2, {}, None),
    ]  # fmt: skip
    resource = Resource.create({"service.name": "failsoft-test"})
    encoder = Encoder(resource)
    for _ in range(2):  # the second time from the attribute pairs kept
        ours = ExportTraceServiceRequest.FromString(encoder.encode(records))
        sdks = ExportTraceServiceRequest.FromString(
            encode_spans(readable(records, resource)).SerializeToString()
        )
        assert ours == sdks
