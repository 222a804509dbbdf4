"""In-process tiers: an imported callable or model object, or a model file (ONNX, joblib, LightGBM).

Model files are compiled into validation-free numpy arithmetic when their family allows (see compile.py);
compiled models answer on the event loop in microseconds. Everything else runs in threads of the tier's
own (tiers/threads.py), as many as its concurrency limit, so a hung model can neither stall the server nor
take more threads than its bulkhead allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from failsoft.config import FeatureSpec, PythonTierSpec
from failsoft.errors import ConfigError, InvalidOutput
from failsoft.tiers.base import Backend, Done, in_thread
from failsoft.tiers.compile import RowFn, cheapest, compile_model, compile_row, cost_us, sample_rows
from failsoft.tiers.loader import Loader
from failsoft.tiers.pool import WorkerPool
from failsoft.tiers.threads import Threads
from failsoft.tiers.trees import Array
from failsoft.types import Reason, TierKind
from failsoft.validation import Batch

log = logging.getLogger("failsoft.tiers.python")
_now = time.monotonic


def import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# The libraries a model file of each kind needs to load, imported ahead of the first load on first use
# (tiers/loader.py ``warm``): importing scikit-learn takes about half a second, which the first model to
# load would otherwise pay. Pickles name their classes; these are the families failsoft compiles.
LIBRARIES = {
    ".onnx": ("onnxruntime",),
    ".txt": ("lightgbm",),
    ".lgb": ("lightgbm",),
    "": ("joblib", "sklearn.linear_model", "sklearn.ensemble", "sklearn.tree", "sklearn.pipeline"),
}


def load_model_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnxruntime

        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if suffix in {".txt", ".lgb"}:
        import lightgbm

        return lightgbm.Booster(model_file=str(path))
    import joblib

    return joblib.load(path)


class _Onnx:
    """An onnxruntime session behind the predict/predict_proba face of a scikit-learn model."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.dtype = np.float32 if "float)" in inp.type and "double" not in inp.type else np.float64
        outs = [o.name for o in session.get_outputs()]
        self.label_name = outs[0]
        self.proba_name = next((o for o in outs if "prob" in o.lower()), outs[-1] if len(outs) > 1 else None)

    def _run(self, x: Array, name: str) -> Array:
        out = self.session.run([name], {self.input_name: x.astype(self.dtype)})[0]
        if isinstance(out, list):  # ZipMap: a list of {class: probability}
            return np.array([[row[k] for k in sorted(row)] for row in out])
        return np.asarray(out)

    def predict(self, x: Array) -> Array:
        return self._run(x, self.label_name)

    def predict_proba(self, x: Array) -> Array:
        if self.proba_name is None:
            raise InvalidOutput("this ONNX model has no probability output")
        return self._run(x, self.proba_name)


def expected_inputs(obj: Any) -> tuple[int | None, list[str] | None]:
    """How many features a model object was fitted on, and their names when it knows them (scikit-learn's
    ``n_features_in_``/``feature_names_in_``, a LightGBM Booster's own, an ONNX input's last dimension)."""
    if isinstance(obj, _Onnx):
        shape = obj.session.get_inputs()[0].shape
        last = shape[-1] if len(shape) >= 2 else None
        return (last if isinstance(last, int) else None), None
    if callable(getattr(obj, "num_feature", None)) and callable(getattr(obj, "feature_name", None)):
        names = [str(n) for n in obj.feature_name()]
        generic = all(n == f"Column_{i}" for i, n in enumerate(names))  # fitted without names
        return int(obj.num_feature()), None if generic else names
    n = getattr(obj, "n_features_in_", None)
    fitted = getattr(obj, "feature_names_in_", None)
    return (int(n) if isinstance(n, int | np.integer) else None), (
        [str(x) for x in fitted] if fitted is not None else None
    )


def input_mismatch(obj: Any, declared: list[str]) -> str | None:
    """Why the declared inputs cannot feed this model (its matrix is built in declared order); None when
    they can."""
    n, names = expected_inputs(obj)
    if names is not None and names != declared:
        if sorted(names) == sorted(declared):
            return (
                f"the model was fitted on ({', '.join(names)}) in that order; the inputs are declared "
                f"as ({', '.join(declared)}): each value would reach the wrong feature"
            )
        return (
            f"the model was fitted on {len(names)} features ({', '.join(names)}); the inputs declared "
            f"are {len(declared)} ({', '.join(declared)})"
        )
    if n is not None and n != len(declared):
        return f"the model expects {n} features; {len(declared)} inputs are declared ({', '.join(declared)})"
    return None


def _forget_names(obj: Any) -> None:
    """Drop the column names a model loaded from its file was fitted with, once they are known to be the
    declared inputs in order: the tier hands it a matrix, on which scikit-learn would warn on every call."""
    first = obj.steps[0][1] if hasattr(obj, "steps") and obj.steps else None
    for part in (obj, first):
        if part is not None and getattr(part, "feature_names_in_", None) is not None:
            with contextlib.suppress(AttributeError):
                del part.feature_names_in_


# A compiled model answers on the event loop only when one row costs less than this; a big forest that
# takes longer runs in the tier's threads like any other model, so it cannot stall the server.
INLINE_BUDGET_US = 200.0


class PythonBackend(Backend):
    kind = TierKind.PYTHON

    def __init__(
        self,
        spec: PythonTierSpec,
        features: tuple[FeatureSpec, ...],
        resolve: Callable[[str], Path],
        file: str,
        key: str,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self._features = features
        self._resolve = resolve
        self._file, self._key = file, key
        self._executor: Threads | None = None
        self._fn: Callable[[Batch], list[Any]] | None = None
        self.compiled = False
        self.own_from_rows: int | None = None  # compiled: the batch size from which its own method runs
        self.single_row_us = float("inf")
        self.source = spec.target or spec.path or ""
        self._pool: WorkerPool | None = None
        # why the declared inputs cannot feed the model (a count or names that differ), found at load
        self.input_problem: str | None = None
        self.loaded = False
        self.model = ""  # the model it serves (named in the loader's log lines)
        self.loader: Loader | None = None  # set when it loads on first use (make_lazy)
        self.last_use = 0.0

    def build_function(self) -> Callable[[Batch], list[Any]]:
        """Load the model and make the function that answers a batch (compiled where it can be)."""
        return self._build(self._load())

    async def start(self) -> None:
        if self.spec.run == "process":
            spec = self.spec
            if spec.path is not None:  # the worker starts elsewhere: give it the file, not the folder
                spec = msgspec.structs.replace(spec, path=str(self._resolve(spec.path).resolve()))
            self._pool = WorkerPool(spec, self._features, self._file, self._key, spec.processes)
            await self._pool.start()
            return
        if not self.lazy:  # loaded in a thread: a big model does not hold the event loop (a reload serves)
            self._install(await asyncio.to_thread(self.build_function))

    def _install(self, fn: Callable[[Batch], list[Any]]) -> None:
        self._fn = fn
        self.inline = self.spec.run == "inline" or (
            self.spec.run == "auto" and self.compiled and self.single_row_us < INLINE_BUDGET_US
        )
        # Threads for a model that runs off the loop, or for the batches too big to answer on it (they
        # start only when first used, and never with the loop waiting: tiers/threads.py).
        self._executor = Threads(self.spec.max_concurrency, thread_name_prefix=f"tier-{self.name}")
        self.loaded = True

    # ---- loaded on first use (tiers/loader.py) ----------------------------------------------------------

    def make_lazy(self, model: str, loader: Loader) -> None:
        """Load on first use, through ``loader``, rather than at start."""
        self.lazy, self.model, self.loader = True, model, loader
        loader.libraries.update(self.libraries())

    def use(self) -> tuple[Reason, str] | None:
        if self._fn is not None:
            self.last_use = _now()
            return None
        assert self.loader is not None
        return self.loader.want(self)

    def load(self) -> Callable[[], None]:
        fn = self.build_function()  # in the loader's thread
        return lambda: self._install(fn)

    def unload(self) -> None:
        self._fn, self.loaded, self.inline = None, False, False
        if self._executor is not None:  # its calls in flight finish on the model they hold
            self._executor.shutdown(wait=False)
            self._executor = None
        self.compiled, self.own_from_rows, self.single_row_us = False, None, float("inf")
        self.__dict__.pop("inline_rows", None)

    def libraries(self) -> tuple[str, ...]:
        """What loading its model will import (see LIBRARIES)."""
        if self.spec.target is not None:
            return (self.spec.target.partition(":")[0],)
        assert self.spec.path is not None
        suffix = Path(self.spec.path).suffix.lower()
        return LIBRARIES.get(suffix, LIBRARIES[""])

    def file_bytes(self) -> int:
        try:
            return self._resolve(self.spec.path).stat().st_size if self.spec.path else 0
        except OSError:
            return 0

    def _load(self) -> Any:
        spec = self.spec
        try:
            if spec.target is not None:
                return import_target(spec.target)
            assert spec.path is not None
            obj = load_model_file(self._resolve(spec.path))
        except ConfigError:
            raise
        except Exception as err:
            what = "target" if spec.target is not None else "path"
            raise ConfigError(
                self._file,
                f"{self._key}.{what}",
                f"cannot load {self.source!r}: {err}",
                "check the import path or file",
            ) from err
        return _Onnx(obj) if type(obj).__name__ == "InferenceSession" else obj

    def _build(self, obj: Any) -> Callable[[Batch], list[Any]]:
        spec = self.spec
        method = spec.method
        if method == "auto":
            method = (
                "predict_proba"
                if hasattr(obj, "predict_proba")
                else "predict"
                if hasattr(obj, "predict")
                else "call"
            )
        if method == "call":
            if not callable(obj):
                raise ConfigError(
                    self._file,
                    f"{self._key}.target",
                    f"{self.source!r} is not callable",
                    "point at a function, or an object with predict/predict_proba",
                )
            if spec.call == "batch":
                return lambda batch: list(obj(batch.rows))
            return lambda batch: [obj(row) for row in batch.rows]
        if not hasattr(obj, method):
            raise ConfigError(
                self._file,
                f"{self._key}.method",
                f"{type(obj).__name__} has no {method}",
                'use method = "predict" or "predict_proba"',
            )
        matrix_fn: Callable[[Array], Array] = getattr(obj, method)
        self.reads_matrix = True
        if self._features:
            self.input_problem = input_mismatch(obj, [f.name for f in self._features])
            if self.input_problem is None and spec.path is not None:
                _forget_names(obj)
        row_fn: RowFn | None = None  # one row's answer from its values, in plain Python (linear models)
        if spec.compile and self._features:
            sample = sample_rows([(f.min, f.max) for f in self._features])
            fast = compile_model(obj, method, sample)
            if fast is not None:
                self.compiled = True
                row_fn = compile_row(obj, method, sample)
                matrix_fn = self._dispatch(fast, matrix_fn, sample)
                if row_fn is not None:  # one row costs what its plain-Python form costs
                    one = sample[0].tolist()
                    row_us = cost_us(lambda _: row_fn(one), sample[:1])
                    self.single_row_us = min(self.single_row_us, row_us)
                    if row_us < INLINE_BUDGET_US:
                        self.inline_rows = max(self.inline_rows, 1)
                log.info(
                    "tier %s: %s compiled to numpy (%.1f µs a row; its own method from %s rows; on the "
                    "event loop up to %s rows)",
                    self.name,
                    type(obj).__name__,
                    self.single_row_us,
                    self.own_from_rows or "no",
                    "any" if self.inline_rows == sys.maxsize else self.inline_rows,
                )
        column = spec.column

        def run(batch: Batch) -> list[Any]:
            values = batch.values
            if row_fn is not None and values is not None and len(values) == 1:
                one = row_fn(values[0])
                if type(one) is list:
                    if column is not None:
                        one = one[column]
                    elif len(one) == 2 and method == "predict_proba":
                        one = one[1]
                return [one]
            out = np.asarray(matrix_fn(batch.matrix()))
            if out.ndim == 2:
                if column is not None:
                    out = out[:, column]
                elif out.shape[1] == 2 and method == "predict_proba":
                    out = out[:, 1]
            result: list[Any] = out.tolist()
            return result

        return run

    def _dispatch(
        self, fast: Callable[[Array], Array], own: Callable[[Array], Array], sample: Array
    ) -> Callable[[Array], Array]:
        """The cheaper of the compiled closure and the model's own method for each batch size (see
        ``cheapest``); it notes from which size the own method runs, and how many rows are answered on the
        event loop: those that fit its budget (a bigger batch goes to the tier's threads)."""
        fn, self.own_from_rows, compiled, original = cheapest(fast, own, sample)
        self.single_row_us = min(compiled.one, original.one)
        if self.spec.run != "inline":
            budget = INLINE_BUDGET_US
            self.inline_rows = max(compiled.rows_within(budget), original.rows_within(budget))
        return fn

    def predict_inline(self, batch: Batch) -> list[Any]:
        assert self._fn is not None
        return self._fn(batch)

    async def predict(self, batch: Batch, request_id: str, done: Done) -> list[Any]:
        if self._pool is not None:
            return await self._pool.call(batch, done)
        assert self._fn is not None and self._executor is not None
        return await in_thread(self._executor, self._fn, batch, done)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            await self._pool.close()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": self.source,
            "compiled": self.compiled,
            "inline": self.inline,
            "single_row_us": round(self.single_row_us, 1) if self.compiled else None,
            "inline_rows": None if not self.inline or self.inline_rows == sys.maxsize else self.inline_rows,
            "own_method_from_rows": self.own_from_rows,
            "run": "process" if self._pool else "inline" if self.inline else "thread",
            "processes": self._pool.size if self._pool else None,
            # pure Python in a thread shares the interpreter lock with the server: a model stuck in a loop
            # slows every request (compiled numpy arithmetic on the loop cannot spin)
            "can_hold_interpreter": self._pool is None and not self.compiled,
            "load": "first_use" if self.lazy else "start",
            "loaded": self.loaded or self._pool is not None,
        }
