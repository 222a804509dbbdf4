"""In-process tiers: an imported callable or model object, or a model file (ONNX, joblib, LightGBM).

Model files are compiled into validation-free numpy arithmetic when their family allows (see compile.py);
compiled models answer on the event loop in microseconds. Everything else runs in threads of the tier's
own (tiers/threads.py), as many as its concurrency limit, so a hung model can neither stall the server nor
take more threads than its bulkhead allows.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from failsoft.config import FeatureSpec, PythonTierSpec
from failsoft.errors import ConfigError
from failsoft.tiers.base import Backend, Done, in_thread
from failsoft.tiers.compile import (
    Measured,
    RowFn,
    by_size,
    cheapest,
    compile_model,
    compile_row,
    cost_us,
    sample_rows,
    unproven,
    unproven_row,
)
from failsoft.tiers.helper import Prepared
from failsoft.tiers.loader import Loader
from failsoft.tiers.model_files import (
    LIBRARIES,
    Onnx,
    forget_names,
    import_target,
    input_mismatch,
    load_model_file,
)
from failsoft.tiers.pool import WorkerPool, worker_args
from failsoft.tiers.threads import Threads
from failsoft.tiers.trees import Array
from failsoft.types import Reason, TierKind
from failsoft.validation import Batch

log = logging.getLogger("failsoft.tiers.python")
_now = time.monotonic


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
        self.method: str = spec.method  # the one it calls ("auto" resolved once built)
        self.row_form = False
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
            spec = self._spec_elsewhere()
            self._pool = WorkerPool(spec, self._features, self._file, self._key, spec.processes)
            await self._pool.start()
            return
        if not self.lazy:  # loaded in a thread: a big model does not hold the event loop (a reload serves)
            self._install(await asyncio.to_thread(self.build_function))

    def _spec_elsewhere(self) -> PythonTierSpec:
        """Its spec for another process: a model file's path absolute, not relative to the portfolio."""
        spec = self.spec
        if spec.path is not None:
            spec = msgspec.structs.replace(spec, path=str(self._resolve(spec.path).resolve()))
        return spec

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

    def prepare_args(self) -> str | None:
        """What the load helper needs to load its model file (tiers/helper.py); None for an imported target,
        which is loaded here."""
        if self.spec.path is None:
            return None
        return worker_args(self._spec_elsewhere(), self._features, self._file, self._key)

    def load_measured(self) -> tuple[Any, Measured]:
        """Its model loaded, compiled and measured (in the load helper): the object and what was found."""
        obj = self._load()
        self._build(obj)
        return obj, self.measured()

    def load(self, prepared: Prepared | None = None) -> Callable[[], None]:
        """In the loader's thread: the model loaded here, or handed over by the load helper (``prepared``,
        the pickled object and what the helper measured of it: nothing to run on sample rows here)."""
        if prepared is None:
            fn = self.build_function()
        else:
            blob, measured = prepared
            fn = self._build(pickle.loads(blob), measured)
        return lambda: self._install(fn)

    def unload(self) -> None:
        self._fn, self.loaded, self.inline = None, False, False
        if self._executor is not None:  # its calls in flight finish on the model they hold
            self._executor.shutdown(wait=False)
            self._executor = None
        self.compiled, self.row_form, self.own_from_rows = False, False, None
        self.single_row_us = float("inf")
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
        return Onnx(obj) if type(obj).__name__ == "InferenceSession" else obj

    def _build(self, obj: Any, measured: Measured | None = None) -> Callable[[Batch], list[Any]]:
        """The function answering a batch from ``obj``: compiled, proven and measured here, or as
        ``measured`` says another process found it for an equal object (tiers/helper.py)."""
        spec = self.spec
        method: str = spec.method
        if measured is not None:
            method = measured.method
        elif method == "auto":
            method = (
                "predict_proba"
                if hasattr(obj, "predict_proba")
                else "predict"
                if hasattr(obj, "predict")
                else "call"
            )
        self.method = method
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
                forget_names(obj)
        row_fn: RowFn | None = None  # one row's answer from its values, in plain Python (linear models)
        if spec.compile and self._features:
            if measured is not None and measured.compiled:
                row_fn, matrix_fn = self._as_measured(obj, matrix_fn, measured)
            elif measured is None:
                row_fn, matrix_fn = self._compile(obj, matrix_fn)
            self.row_form = row_fn is not None
            if self.compiled:
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

    def _compile(
        self, obj: Any, own: Callable[[Array], Array]
    ) -> tuple[RowFn | None, Callable[[Array], Array]]:
        """Compiled, proven on sample rows and measured: the one-row form (None: none) and the matrix
        function (``own``, the model's method, where it cannot be compiled)."""
        sample = sample_rows([(f.min, f.max) for f in self._features])
        fast = compile_model(obj, self.method, sample)
        if fast is None:
            return None, own
        self.compiled = True
        row_fn = compile_row(obj, self.method, sample)
        matrix_fn = self._dispatch(fast, own, sample)
        if row_fn is not None:  # one row costs what its plain-Python form costs
            one = sample[0].tolist()
            row_us = cost_us(lambda _: row_fn(one), sample[:1])
            self.single_row_us = min(self.single_row_us, row_us)
            if row_us < INLINE_BUDGET_US:
                self.inline_rows = max(self.inline_rows, 1)
        return row_fn, matrix_fn

    def _as_measured(
        self, obj: Any, own: Callable[[Array], Array], measured: Measured
    ) -> tuple[RowFn | None, Callable[[Array], Array]]:
        """Compiled as another process proved and measured an equal model (no sample rows run here)."""
        fast = unproven(obj, self.method)
        if fast is None:  # it compiled there: an equal object compiles here; if not, find out here
            return self._compile(obj, own)
        self.compiled = True
        self.own_from_rows, self.single_row_us = measured.own_from_rows, measured.single_row_us
        self.inline_rows = measured.inline_rows
        row_fn = unproven_row(obj, self.method) if measured.row_form else None
        return row_fn, by_size(fast, own, measured.own_from_rows)

    def measured(self) -> Measured:
        """What the last build found, for another process to build an equal model without measuring."""
        return Measured(
            self.method,
            self.compiled,
            self.row_form,
            self.own_from_rows,
            self.single_row_us,
            self.inline_rows,
        )

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
