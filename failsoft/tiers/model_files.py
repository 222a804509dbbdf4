"""Where an in-process tier's model comes from: an imported target, or a model file (ONNX, joblib, LightGBM),
and whether the inputs a portfolio declares can feed it."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from failsoft.errors import InvalidOutput
from failsoft.tiers.trees import Array


def import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# The libraries a model file of each kind needs to load, imported ahead of the first load on first use
# (tiers/loader.py ``warm``, and the load helper as it starts): importing scikit-learn takes about half a
# second, which the first model to load would otherwise pay. Pickles name their classes; these are the
# families failsoft compiles.
LIBRARIES = {
    ".onnx": ("onnxruntime",),
    ".txt": ("lightgbm",),
    ".lgb": ("lightgbm",),
    "": ("joblib", "sklearn.linear_model", "sklearn.ensemble", "sklearn.tree", "sklearn.pipeline"),
}


def import_libraries(names: list[str]) -> None:
    """``names`` imported ahead of the loads that need them (in the loader's thread, in the load helper);
    one that is missing is left to the load that needs it to say."""
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


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


class Onnx:
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
    if isinstance(obj, Onnx):
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


def forget_names(obj: Any) -> None:
    """Drop the column names a model loaded from its file was fitted with, once they are known to be the
    declared inputs in order: the tier hands it a matrix, on which scikit-learn would warn on every call."""
    first = obj.steps[0][1] if hasattr(obj, "steps") and obj.steps else None
    for part in (obj, first):
        if part is not None and getattr(part, "feature_names_in_", None) is not None:
            with contextlib.suppress(AttributeError):
                del part.feature_names_in_
