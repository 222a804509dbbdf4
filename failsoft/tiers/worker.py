"""A worker process of a ``run = "process"`` tier: loads the tier's model once, then answers batches.

Frames both ways: a 4-byte little-endian length, then a msgpack document. A request is
``{"rows": [...]}`` (a model of row objects) or ``{"m": bytes, "n": rows}`` (float64 matrix, C order);
an answer is ``{"ok": [...]}`` or ``{"error": "..."}``. The first frame the worker sends says it is ready
(``{"ready": true, "reads_matrix": bool}``) or why it could not load (``{"error": ...}``).

    python -m failsoft.tiers.worker SPEC_JSON     (the pool starts it niced: tiers/pool.py's BOOT)
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from failsoft.tiers.frames import frame, read_frame


def main() -> None:
    from failsoft.config import FeatureSpec, PythonTierSpec
    from failsoft.errors import ConfigError
    from failsoft.tiers.python import PythonBackend
    from failsoft.validation import Batch

    doc = msgspec.json.decode(sys.argv[1])
    spec = msgspec.convert(doc["spec"], PythonTierSpec)
    features = tuple(msgspec.convert(f, FeatureSpec) for f in doc["features"])
    names = tuple(f.name for f in features)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    if spec.max_memory_mb is not None:  # malloc fails past it: a MemoryError, not the OOM killer
        limit = spec.max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    backend = PythonBackend(spec, features, Path, doc["file"], doc["key"])
    try:
        fn = backend.build_function()
    except ConfigError as err:
        out.write(frame({"error": str(err), "config": [err.file, err.key, err.problem, err.fix]}))
        out.flush()
        return
    except Exception as err:
        out.write(frame({"error": f"{type(err).__name__}: {err}"}))
        out.flush()
        return
    out.write(frame({"ready": True, "reads_matrix": backend.reads_matrix}))
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


if __name__ == "__main__":
    main()
