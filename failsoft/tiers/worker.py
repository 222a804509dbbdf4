"""A worker process of a ``run = "process"`` tier: loads the tier's model once, then answers batches.

Frames both ways: a 4-byte little-endian length, then a msgpack document. A request is
``{"rows": [...]}`` (a model of row objects) or ``{"m": bytes, "n": rows}`` (float64 matrix, C order);
an answer is ``{"ok": [...]}`` or ``{"error": "..."}``. The first frame the worker sends says it is ready
(``{"ready": true, "reads_matrix": bool}``) or why it could not load (``{"error": ...}``).

    python -m failsoft.tiers.worker SPEC_JSON     (the pool starts it niced: tiers/pool.py's BOOT)

or forked by the fork server (tiers/forks.py), which calls ``main`` with the same JSON:

    python -m failsoft.tiers.worker --fork-server FD
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from failsoft.tiers.frames import MAX_ARGS, PID, READY, frame, read_frame

if TYPE_CHECKING:
    from failsoft.tiers.python import PythonBackend


def preload() -> None:
    """What every worker imports before its model: done once by the fork server (tiers/forks.py)."""
    import failsoft.config
    import failsoft.errors
    import failsoft.tiers.python
    import failsoft.validation  # noqa: F401


def backend(doc: dict[str, Any]) -> PythonBackend:
    """The tier that ``doc`` (``pool.worker_args``) describes, not loaded yet."""
    from failsoft.config import FeatureSpec, PythonTierSpec
    from failsoft.tiers.python import PythonBackend

    spec = msgspec.convert(doc["spec"], PythonTierSpec)
    features = tuple(msgspec.convert(f, FeatureSpec) for f in doc["features"])
    return PythonBackend(spec, features, Path, doc["file"], doc["key"])


def failure(err: Exception) -> dict[str, Any]:
    """Why a model did not load, as a frame's document (a ConfigError's file, key, problem and fix)."""
    from failsoft.errors import ConfigError

    if isinstance(err, ConfigError):
        return {"error": str(err), "config": [err.file, err.key, err.problem, err.fix]}
    return {"error": f"{type(err).__name__}: {err}"[:1000]}


def main(args: str | None = None) -> None:
    """Serve the tier that ``args`` (else the first argument) describes, over stdin and stdout; or, when
    it names ``helper``, be the load helper (``helper``)."""
    from failsoft.validation import Batch

    doc = msgspec.json.decode(args if args is not None else sys.argv[1])
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    if "helper" in doc:
        return helper(doc["helper"], stdin, out)
    tier = backend(doc)
    names = tuple(f["name"] for f in doc["features"])
    if tier.spec.max_memory_mb is not None:  # malloc fails past it: a MemoryError, not the OOM killer
        limit = tier.spec.max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        fn = tier.build_function()
    except Exception as err:
        out.write(frame(failure(err)))
        out.flush()
        return
    out.write(frame({"ready": True, "reads_matrix": tier.reads_matrix}))
    out.flush()
    while (req := read_frame(stdin)) is not None:
        try:
            if "m" in req:
                matrix = np.frombuffer(req["m"], dtype=np.float64).reshape(req["n"], -1)
                batch = Batch.of_matrix(names, matrix)
            else:
                batch = Batch(names, req["rows"])
            answer: dict[str, Any] = {"ok": fn(batch)}
        except Exception as err:
            answer = {"error": f"{type(err).__name__}: {err}"[:1000]}
        out.write(frame(answer))
        out.flush()


# The biggest pickled model handed over (a frame says its length in 4 bytes); a bigger one loads here
MAX_MODEL = 1 << 31


def helper(libraries: list[str], stdin: Any, out: Any) -> None:
    """The load helper (tiers/helper.py): imports ``libraries``, says it is ready, then for each request
    (``{"load": worker_args}``) loads that model, compiles, proves and measures it, and answers with the
    object pickled and what was measured (``{"model": None}``: it cannot be pickled) or why it failed."""
    # It runs only on CPU the serving process leaves: a process at nice 5 that has a core keeps it for the
    # rest of its slice when the serving process wakes (milliseconds, on every request that arrived
    # meanwhile); one at SCHED_IDLE gives it up at once. A load waits for idle CPU; its model's requests
    # are answered by their next tier meanwhile.
    with contextlib.suppress(AttributeError, OSError):  # Linux's
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    from failsoft.tiers.model_files import import_libraries

    import_libraries(libraries)
    out.write(frame({"ready": True}))
    out.flush()
    while (req := read_frame(stdin)) is not None:
        answer: dict[str, Any]
        try:
            obj, measured = backend(msgspec.json.decode(req["load"])).load_measured()
        except Exception as err:
            answer = failure(err)
        else:
            try:
                blob = pickle.dumps(obj, protocol=5)
                answer = {"model": blob if len(blob) < MAX_MODEL else None, "measured": measured}
            except Exception:  # loaded in the serving process instead
                answer = {"model": None}
            del obj
        out.write(frame(answer))
        out.flush()


def fork_server(sock: socket.socket) -> None:
    """The fork server (tiers/forks.py): imports what every worker needs, says it is ready, then forks a
    worker for each request until the socket closes, reaping its children as they exit."""
    preload()
    sock.sendall(READY)
    while True:
        readable = select.select([sock], [], [], 1.0)[0]
        _reap()
        if not readable:
            continue
        try:
            args, fds, _, _ = socket.recv_fds(sock, MAX_ARGS, 2)
        except OSError:
            return
        if not args:
            return  # the serving process has gone
        pid = os.fork()
        if pid == 0:  # the worker: its pipes as stdin and stdout, then the model; never back in this loop
            code = 1
            try:
                sock.close()
                for fd, std in zip(fds, (0, 1), strict=True):
                    os.dup2(fd, std)
                    os.close(fd)
                sys.stdin, sys.stdout = os.fdopen(0, "r"), os.fdopen(1, "w")
                main(args.decode())
                code = 0
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)  # before it can be reaped: no other process can have its pid meanwhile
        try:
            socket.send_fds(sock, [PID.pack(pid)], [pidfd])
        finally:
            os.close(pidfd)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:
        fork_server(socket.socket(fileno=int(sys.argv[2])))
    else:
        main()
