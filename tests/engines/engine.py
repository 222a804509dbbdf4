"""Real serving engines for the integration tests: a virtualenv holding the ``engines`` extra (MLServer
with its scikit-learn runtime, KServe's client), built once per machine, and an MLServer process on
loopback that can be killed and started again.

The virtualenv lives in ``$FAILSOFT_ENGINES_VENV`` or under ``~/.cache/failsoft/``, keyed by what it holds
(the extra, this scikit-learn's version, this Python's), so a change to the list builds a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sklearn

from failsoft.demo.procs import free_port, niced, wait_http

ROOT = Path(__file__).resolve().parents[2]


def requirements() -> list[str]:
    """The ``engines`` extra, and this environment's scikit-learn (a model pickled here loads there)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return [*extras["engines"], f"scikit-learn=={sklearn.__version__}"]


def unavailable(why: str) -> None:
    """Under CI the engines are required (the run fails); elsewhere a machine without them skips."""
    if os.environ.get("CI"):
        pytest.fail(f"the serving engines are required under CI: {why}")
    pytest.skip(why)


def engines_venv() -> Path:
    """The virtualenv's folder, built (about two minutes) when missing or incomplete."""
    try:
        return venv("engines", requirements())
    except RuntimeError as err:
        unavailable(str(err))
        raise


def venv(name: str, reqs: list[str]) -> Path:
    """A virtualenv holding ``reqs``, built once per machine under ``~/.cache/failsoft/`` (keyed by the list
    and this Python) or in ``$FAILSOFT_ENGINES_VENV`` for the engines; RuntimeError when pip fails."""
    key = hashlib.sha256("\n".join([*reqs, sys.version]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "failsoft"
    given = os.environ.get("FAILSOFT_ENGINES_VENV") if name == "engines" else None
    root = Path(given or cache / f"{name}-{key}")
    done = root / ".complete"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and use it
        if done.exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nbuilding {root} ({', '.join(reqs)}): once per machine", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
            subprocess.run(
                [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *reqs],
                check=True,
                timeout=1500,
                capture_output=True,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            said = (getattr(err, "stderr", b"") or b"").decode(errors="replace")[-2000:]
            raise RuntimeError(f"cannot install {reqs} into {root}: {err}\n{said}") from None
        done.touch()
    return root


class MLServer:
    """``mlserver start`` serving one folder of models on free loopback ports, niced: it plays a serving box
    of its own, and must not starve the gateway the way a separate box never could."""

    def __init__(self, venv: Path, models: Path, log: Path) -> None:
        self.venv, self.models, self.log = venv, models, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        settings = {
            "parallel_workers": 0,
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
        }
        (models / "settings.json").write_text(json.dumps(settings))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MLServer:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                niced([str(self.venv / "bin" / "mlserver"), "start", str(self.models)]),
                stdout=fh,
                stderr=fh,
                cwd=self.models,
                start_new_session=True,
            )
        try:
            wait_http(f"{self.url}/v2/health/ready", self.proc, timeout_s=120)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; its log: {self.log.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        """kill -9, of the server and anything it started."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def runtime_model(folder: Path, name: str, model_file: Path, implementation: str) -> None:
    """A model folder for one of MLServer's runtimes: the file, and its model-settings.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, folder / model_file.name)
    settings = {"name": name, "implementation": implementation, "parameters": {"uri": f"./{model_file.name}"}}
    (folder / "model-settings.json").write_text(json.dumps(settings))


def sklearn_model(folder: Path, name: str, model_file: Path) -> None:
    """A model folder for MLServer's scikit-learn runtime."""
    runtime_model(folder, name, model_file, "mlserver_sklearn.SKLearnModel")
