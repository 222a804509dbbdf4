"""failsoft beside its peers, one run: the same model and row served by failsoft, a bare ASGI app, MLServer
and BentoML, started one at a time, warmed up, then loaded by wrk at concurrency 1 and 32; ratios to the
bare app.

The model is a scikit-learn LogisticRegression on the bundled breast-cancer set (30 floats a row); each
server answers P(class 1) for one row a request. MLServer (1.7, its scikit-learn runtime, parallel workers
off) and BentoML (1.4, one worker) pin packages that conflict with failsoft's test environment, so each is
installed from the registry into a virtualenv of its own under ``~/.cache/failsoft/`` the first time (a few
minutes; ``--peers`` leaves them out). failsoft runs with its defaults, every answer logged to SQLite.

``--hang``: the model never answers. failsoft answers at its deadline from the next tier (here its primary
is a remote engine that hangs, the same model in process behind it); the others hold the request until
the client gives up (wrk's timeout, 5 s): answered nothing in 12 s.

    python bench/peers.py [--seconds 5] [--peers failsoft,bare,mlserver,bentoml] [--hang]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import sklearn
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from overhead import portfolio, wrk  # noqa: E402

from failsoft.demo.procs import free_port, wait_http  # noqa: E402
from tests.engines.engine import requirements, sklearn_model, venv  # noqa: E402

BENTOML = ["bentoml==1.4.40", f"scikit-learn=={sklearn.__version__}"]

# BentoML's service: the model's predict_proba behind one JSON route (sleeps for ever with HANG=1).
BENTO_SERVICE = """
import os, time
import bentoml, joblib, numpy as np

MODEL, NAMES = os.environ["PEER_MODEL"], os.environ["PEER_NAMES"].split(",")

@bentoml.service(workers=1)
class LR:
    def __init__(self) -> None:
        self.model = joblib.load(MODEL)

    @bentoml.api
    def predict(self, inputs: dict) -> float:
        if os.environ.get("HANG"):
            time.sleep(3600)
        x = np.array([[inputs[n] for n in NAMES]], dtype=np.float64)
        return float(self.model.predict_proba(x)[0, 1])
"""

# MLServer's custom runtime for --hang: a model that never answers.
MLSERVER_HANG = """
import asyncio
from mlserver import MLModel

class Hang(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload):
        await asyncio.sleep(3600)
"""


@contextlib.contextmanager
def running(cmd: list[str], ready: str, log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[None]:  # fmt: skip
    """``cmd`` started, ready at ``ready``, stopped (and its children) at the end."""
    import os
    import signal

    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=fh, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True
        )
    try:
        try:
            wait_http(ready, proc, timeout_s=300)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; its log: {log.read_text()[-2000:]}") from None
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load(url: str, body: str, seconds: int, timeout: bool) -> dict[str, Any]:
    """Warm-up, then c=1 and c=32 (with --hang: four clients that give up after 5 s)."""
    if timeout:
        return hang_load(url, body, seconds)
    wrk(url, body, 4, 2)
    return {"c1": wrk(url, body, 1, seconds), "c32": wrk(url, body, 32, seconds)}


def hang_load(url: str, body: str, seconds: int) -> dict[str, Any]:
    """Four clients asking one after another for ``seconds`` (at least 12), each giving up on an answer
    after 5 s (wrk counts no timeout for a request that is never answered, so this is a client of its own)."""
    parts = urllib.parse.urlsplit(url)
    answered: list[float] = []
    timeouts = errors = 0
    lock = threading.Lock()
    end = time.monotonic() + max(seconds, 12)

    def client() -> None:
        nonlocal timeouts, errors
        while time.monotonic() < end:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            t = time.perf_counter()
            try:
                conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                with lock:
                    if reply.status == 200:
                        answered.append((time.perf_counter() - t) * 1000)
                    else:
                        errors += 1
            except TimeoutError:
                with lock:
                    timeouts += 1
            except OSError:
                with lock:
                    errors += 1
            finally:
                conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    answered.sort()

    def pct(q: float) -> float | None:
        return round(answered[min(len(answered) - 1, int(q * len(answered)))], 2) if answered else None

    return {"answered": len(answered), "timeouts_5s": timeouts, "errors": errors, "p50_ms": pct(0.5),
            "p99_ms": pct(0.99)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per point (default 5)")
    ap.add_argument("--peers", default="failsoft,bare,mlserver,bentoml")
    ap.add_argument("--hang", action="store_true", help="the model never answers")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/peers.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    peers = args.peers.split(",")
    work = Path(tempfile.mkdtemp(prefix="failsoft-peers-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    model = work / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), model)
    x = data.data[0].tolist()
    row = dict(zip(names, x, strict=True))
    json_body = json.dumps({"inputs": row})
    oip_body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, len(x)], "data": x}],
         "outputs": [{"name": "predict_proba"}]}
    )  # fmt: skip
    results: dict[str, Any] = {}
    env = {"PEER_MODEL": str(model), "PEER_NAMES": ",".join(names), **({"HANG": "1"} if args.hang else {})}

    def report(name: str, figures: dict[str, Any]) -> None:
        results[name] = figures
        print(f"{name:10} {json.dumps(figures)}", file=sys.stderr, flush=True)

    for peer in peers:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = work / f"{peer}.log"
        if peer == "failsoft":
            primary = ""
            if args.hang:
                hang_port = free_port()
                primary = (
                    f'[[models.m.tiers]]\nname = "engine"\nkind = "oip"\nurl = "http://127.0.0.1:{hang_port}"\n'
                    'model_name = "m"\ntimeout_ms = 50\nmax_concurrency = 1024\n'
                    "breaker = { window = 1000000, min_calls = 1000000, failure_rate = 1.0 }\n"
                )
            toml = portfolio(work, primary, names)
            cmd = [sys.executable, "-m", "failsoft.cli", "serve", str(toml), "--port", str(port),
                   "--log-level", "warning", "--allow-unproven"]  # fmt: skip
            with contextlib.ExitStack() as stack:
                if args.hang:
                    stack.enter_context(running(
                        [sys.executable, "-m", "failsoft.demo.backend", "--port", str(hang_port),
                         "--mode", "hang"],
                        f"http://127.0.0.1:{hang_port}/v2/health/ready", work / "hang.log",
                    ))  # fmt: skip
                stack.enter_context(running(cmd, base + "/v2/health/ready", log))
                report(peer, load(base + "/v1/models/m/predict", json_body, args.seconds, args.hang))
        elif peer == "bare":
            cmd = [sys.executable, str(HERE / "bare_app.py"), str(model), ",".join(names), str(port)]
            with running(cmd, base + "/ready", log, env):
                report(peer, load(base + "/", json_body, args.seconds, args.hang))
        elif peer == "mlserver":
            root = venv("engines", requirements())
            models = work / "mlserver"
            if args.hang:
                (models / "m").mkdir(parents=True, exist_ok=True)
                (models / "m" / "hang.py").write_text(textwrap.dedent(MLSERVER_HANG))
                (models / "m" / "model-settings.json").write_text(
                    json.dumps({"name": "m", "implementation": "hang.Hang"})
                )
            else:
                sklearn_model(models / "m", "m", model)
            settings = {"parallel_workers": 0, "http_port": port, "grpc_port": free_port(),
                        "metrics_port": free_port()}  # fmt: skip
            (models / "settings.json").write_text(json.dumps(settings))
            cmd = [str(root / "bin" / "mlserver"), "start", str(models)]
            with running(cmd, base + "/v2/health/ready", log, cwd=models / "m" if args.hang else models):
                report(peer, load(base + "/v2/models/m/infer", oip_body, args.seconds, args.hang))
        elif peer == "bentoml":
            root = venv("peers-bentoml", BENTOML)
            (work / "service.py").write_text(BENTO_SERVICE)
            cmd = [
                str(root / "bin" / "bentoml"),
                "serve",
                "service:LR",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ]
            with running(cmd, base + "/readyz", log, {**env, "BENTOML_DO_NOT_TRACK": "True"}, cwd=work):
                report(peer, load(base + "/predict", json_body, args.seconds, args.hang))
        else:
            raise SystemExit(f"unknown peer {peer!r}: failsoft, bare, mlserver, bentoml")
    if not args.hang and "bare" in results:
        base_fig = results["bare"]
        for r in results.values():
            r["vs_bare"] = {
                c: {"rps": round(r[c]["rps"] / base_fig[c]["rps"], 2),
                    "p99": round(r[c]["p99_ms"] / base_fig[c]["p99_ms"], 2)}
                for c in ("c1", "c32")
            }  # fmt: skip
    print(json.dumps({"hang": args.hang, "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
