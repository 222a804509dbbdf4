"""A fleet on one machine, as Kubernetes runs it: replicas of ``failsoft serve`` sharing PostgreSQL, behind
a real load balancer (HAProxy from the distribution, health-checking ``/v2/health/ready``), clients posting
through it on keep-alive connections, and the replicas replaced one at a time (SIGTERM, drained, a new one
started, ready, the next) or killed with kill -9. Used by tests/deploy/test_rolling.py and
bench/rolling.py."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from failsoft.demo.procs import free_port, serve_command, wait_http
from tests.portfolios import default_tier, model, python_tier, write

DRAIN_S = 1.5  # more than the balancer's check interval x fall (2 x 200 ms), with room on a busy machine
DEADLINE_MS = 100

# a connection a replica refused, closed without answering or never answered goes to another replica
RETRY = """    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request"""
# what kube-proxy does: a connection goes where it goes
NO_RETRY = """    retries 0"""

HAPROXY = """
global
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 5s
    timeout http-keep-alive 10s
{retry}
    option httpchk
    http-check send meth GET uri /v2/health/ready
    default-server inter 200ms fall 2 rise 1
frontend gateway
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
"""


@dataclass
class Tally:
    """What the clients saw."""

    ok: list[str] = field(default_factory=list)  # the ids answered 200
    non_2xx: dict[int, int] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)  # no answer at all (reset, closed), with why
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (when, ms)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def p99(self, start: float, end: float) -> float:
        xs = sorted(ms for at, ms in self.latencies if start <= at < end)
        return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2) if xs else 0.0


class Fleet:
    def __init__(
        self, folder: Path, store_url: str, replicas: int = 3, drain_s: float = DRAIN_S, retry: bool = True
    ) -> None:
        if shutil.which("haproxy") is None:
            raise FileNotFoundError("haproxy")
        self.folder, self.store_url, self.retry = folder, store_url, retry
        self.ports = [free_port() for _ in range(replicas)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inputs = ({"name": "x", "min": 0, "max": 10},)
        churn = model(python_tier("cpu", "tests.helpers:score"), default_tier(0.2), inputs=inputs,
                      deadline_ms=DEADLINE_MS)  # fmt: skip
        models = {"churn": churn}
        # the journal: a replica killed outright leaves its last answers for its successor to log
        store = {"url": store_url, "journal": True}
        self.portfolio = write(folder, models, store=store, server={"drain_s": drain_s})
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.tally = Tally()
        self._stop = threading.Event()
        self._clients: list[threading.Thread] = []
        self.events: list[tuple[float, str]] = []

    # ---- the replicas and the balancer -------------------------------------------------------------------

    def start_replica(self, i: int) -> None:
        cmd = serve_command(self.portfolio, self.ports[i])
        with (self.folder / f"replica-{i}.log").open("ab") as log:
            self.procs[i] = proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        wait_http(f"http://127.0.0.1:{self.ports[i]}/v2/health/ready", proc)
        self.events.append((time.monotonic(), f"replica {i} ready"))

    def start(self) -> Fleet:
        for i in range(len(self.ports)):
            self.start_replica(i)
        servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(self.ports))
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(
            HAPROXY.format(port=self.port, servers=servers, retry=RETRY if self.retry else NO_RETRY)
        )
        with (self.folder / "haproxy.log").open("ab") as log:
            self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log)
        wait_http(self.url + "/v2/health/ready", self.haproxy)
        return self

    def replace(self, i: int) -> float:
        """SIGTERM replica ``i``, wait for its exit (its drain, then its stop), start its successor; the
        seconds the old one took to exit."""
        proc = self.procs[i]
        assert proc is not None
        t = time.monotonic()
        self.events.append((t, f"replica {i} SIGTERM"))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - t
        self.events.append((time.monotonic(), f"replica {i} exited {code}"))
        if code != 0:
            raise RuntimeError(f"replica {i} exited {code} on SIGTERM (see replica-{i}.log)")
        self.start_replica(i)
        time.sleep(0.5)  # the balancer's next checks see it up (rise 1 at 200 ms)
        return took

    def kill(self, i: int) -> None:
        """kill -9 replica ``i`` and start its successor."""
        proc = self.procs[i]
        assert proc is not None
        self.events.append((time.monotonic(), f"replica {i} kill -9"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.start_replica(i)
        time.sleep(0.5)

    def stop(self) -> None:
        self.stop_clients()
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.haproxy is not None:
            self.haproxy.terminate()
            self.haproxy.wait(10)

    # ---- the clients -------------------------------------------------------------------------------------

    def start_clients(self, n: int = 4, pause_s: float = 0.004) -> None:
        for k in range(n):
            t = threading.Thread(target=self._client, args=(k, pause_s), daemon=True)
            t.start()
            self._clients.append(t)

    def stop_clients(self) -> None:
        self._stop.set()
        for t in self._clients:
            t.join(30)
        self._clients.clear()

    def _client(self, k: int, pause_s: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = 0
        tally = self.tally
        while not self._stop.is_set():
            rid = f"c{k}-{i}"
            i += 1
            body = json.dumps({"inputs": {"x": i % 10}, "id": rid})
            t = time.monotonic()
            try:
                conn.request("POST", "/v1/models/churn/predict", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as err:
                with tally.lock:
                    tally.broken.append(f"{rid}: {type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            ms = (time.monotonic() - t) * 1000
            with tally.lock:
                tally.latencies.append((t, ms))
                if status == 200:
                    tally.ok.append(rid)
                else:
                    tally.non_2xx[status] = tally.non_2xx.get(status, 0) + 1
            time.sleep(pause_s)
        conn.close()

    # ---- the log -----------------------------------------------------------------------------------------

    def logged_ids(self) -> list[str]:
        with psycopg.connect(self.store_url) as conn:
            return [r[0] for r in conn.execute("SELECT request_id FROM predictions WHERE role = 'live'")]
