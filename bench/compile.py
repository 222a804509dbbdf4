"""What compiling a fitted model buys the in-process tier: the model's own method side by side with the
closure ``compile_model`` makes of it, and with what the tier runs (the cheaper of the two for the batch's
size, chosen at load by ``cheapest``), on one row and on a batch of 256, in one run.

Each family is fitted on generated data (10 numeric features, binary target; 100 trees or iterations for
the ensembles). A figure is the best of 5 repeats of the mean time of one call. The last line printed is
one JSON object with every figure and the ratios to the model's own method (below 1 is faster).

    python bench/compile.py
"""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from typing import Any

import lightgbm
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression

from failsoft.tiers.compile import cheapest, compile_model


def per_call_us(fn: Callable[[Any], Any], x: Any) -> float:
    timer = timeit.Timer(lambda: fn(x))
    n, _ = timer.autorange()
    return min(timer.repeat(5, n)) / n * 1e6


def main() -> None:
    X, Y = make_classification(n_samples=5000, n_features=10, n_informative=6, random_state=0)
    families: dict[str, Any] = {
        "logistic_regression": LogisticRegression(max_iter=1000),
        "random_forest_100": RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0),
        "gradient_boosting_100": GradientBoostingClassifier(n_estimators=100, random_state=0),
        "hist_gradient_boosting_100": HistGradientBoostingClassifier(max_iter=100, random_state=0),
        "lightgbm_100": lightgbm.LGBMClassifier(n_estimators=100, verbose=-1),
    }
    rows = np.random.default_rng(1).normal(0, 1.5, size=(256, X.shape[1]))
    results: dict[str, dict[str, Any]] = {}
    for name, model in families.items():
        model.fit(X, Y)
        fast = compile_model(model, "predict_proba", rows)
        if fast is None:
            raise SystemExit(f"{name} did not compile")
        tier, switch, _, _ = cheapest(fast, model.predict_proba, rows)
        figures: dict[str, Any] = {"own_method_from_rows": switch}
        line = f"{name:27s}"
        for label, x in (("one_row", rows[:1]), ("batch_256", rows)):
            own = per_call_us(model.predict_proba, x)
            figures[f"{label}_own_us"] = round(own, 1)
            for what, fn in (("compiled", fast), ("tier", tier)):
                us = per_call_us(fn, x)
                figures[f"{label}_{what}_us"] = round(us, 1)
                figures[f"{label}_{what}_ratio"] = round(us / own, 3)
            line += (
                f"  {label}: own {own:8.1f} µs, compiled {figures[f'{label}_compiled_ratio']:.3f}x, "
                f"tier {figures[f'{label}_tier_ratio']:.3f}x"
            )
        results[name] = figures
        print(f"{line}  (own method from {switch or 'no'} rows)", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
