"""What tracing costs, side by side in one run: the same gateway (an in-process model, compiled, and its
default) with traces off, on with nothing sampled, and sampling 1%, 10% and every request, each
exporting over OTLP/HTTP to a receiver on loopback that counts the spans (``spans_a_request``: 2 for a
sampled request, so 0.2 at 10% says none was dropped). Rounds interleave the cases, each round starting
with another, so the machine's drift falls on all of them; medians of the rounds. Load from wrk (c=32) over
loopback; the gateway's CPU per request beside the wall-clock figures. The last line is one JSON object.

    python bench/tracing.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from overhead import Served, wrk_cpu  # noqa: E402

from failsoft.demo.procs import free_port, serve_command, wait_http  # noqa: E402
from tests.portfolios import default_tier, model, python_tier, write  # noqa: E402

# "0%": traces on, nothing sampled (the cost of being ready to trace); then 1%, 10% and every request
CASES = {"off": None, "0%": "0", "1%": "0.01", "10%": "0.1", "100%": "1.0"}


def receiver() -> tuple[ThreadingHTTPServer, list[int]]:
    """An OTLP/HTTP receiver on loopback that counts what it is sent: [bytes, spans]."""
    got = [0, 0]

    class Drop(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            got[0] += len(body)
            request = ExportTraceServiceRequest.FromString(body)
            got[1] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def serve(path: Path, ratio: str | None, collector: str) -> tuple[subprocess.Popen[bytes], Served]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if ratio is not None:
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": ratio}  # fmt: skip
    cmd = serve_command(path, port)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return proc, Served(f"http://127.0.0.1:{port}", proc.pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server, got = receiver()
    collector = f"http://127.0.0.1:{server.server_address[1]}"
    body = json.dumps({"inputs": {"x": 3}})
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="failsoft-bench-tracing-") as tmp:
        churn = model(python_tier("cpu", "tests.helpers:score"), default_tier(0.2),
                      inputs=({"name": "x", "min": 0, "max": 10},), deadline_ms=100)  # fmt: skip
        path = write(Path(tmp), {"churn": churn}, store={"log_predictions": False})
        for r in range(args.rounds):
            order = list(CASES)
            for case in order[r % len(order) :] + order[: r % len(order)]:  # each round starts elsewhere
                before = got[1]
                proc, gw = serve(path, CASES[case], collector)
                try:
                    time.sleep(2)  # the export helper starts beside the gateway: not a request's cost
                    warm = wrk_cpu(gw, gw.url + "/v1/models/churn/predict", body, 32, 1)
                    point = wrk_cpu(gw, gw.url + "/v1/models/churn/predict", body, 32, args.seconds)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)  # the helper has sent what it held when the gateway has exited
                # spans that reached the receiver a request (2 a sampled one: the server's, the tier's)
                point["spans_a_request"] = (got[1] - before) / max(warm["requests"] + point["requests"], 1)
                runs[case].append(point)
    server.shutdown()
    out: dict[str, object] = {}
    for case, points in runs.items():
        out[case] = {key: round(statistics.median(p[key] for p in points), 3) for key in points[0]}
    base = out["off"]
    assert isinstance(base, dict)
    for case in list(CASES)[1:]:
        figures = out[case]
        assert isinstance(figures, dict)
        figures["rps_vs_off"] = round(figures["rps"] / base["rps"], 3)
        figures["p99_vs_off"] = round(figures["p99_ms"] / base["p99_ms"], 3)
    out["span_bytes_received"], out["spans_received"] = got[0], got[1]
    for case in CASES:
        print(f"{case:>5}: {out[case]}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
