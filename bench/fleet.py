"""A portfolio of many models as a platform team has them, generated: most small, some tens of MB, a few
large; linear models, forests and remote tiers; traffic that follows Zipf's law (a few hot models, a long
cold tail). ``bench/thousand.py`` measures serving it.

The mix for N models (by default 1,000), seeded, so two runs make the same files:
- 85%: a logistic regression on 8 features (a few KB), then its safe default;
- 10%: a random forest of a few MB (40 trees);
- 4%: a forest of tens of MB (150 deep trees);
- 1%: a large forest (~100 MB: 400 deep trees);
- one model in 20 has a remote tier first (the demo's Open Inference Protocol backend, given by
  ``remote``), its in-process model second.

Forests are fitted a few times per size and copied (each model has a file of its own, loaded on its own).

    python bench/fleet.py OUT [--models 1000] [--remote http://127.0.0.1:9001]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import tomli_w
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

FEATURES = [f"f{i}" for i in range(8)]
# (share of the models, trees, depth, distinct fits): small linear models are fitted one by one
SIZES = {
    "small": (0.85, 0, 0, 0),
    "forest": (0.10, 40, 10, 4),
    "big": (0.04, 150, 16, 2),
    "large": (0.01, 400, 18, 1),
}
REMOTE_EVERY = 20


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    """The share of traffic of the k-th most popular of ``n`` models (Zipf's law, exponent ``s``)."""
    raw = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def data(seed: int, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(rows, len(FEATURES)))
    y = ((x - 0.5) @ rng.normal(size=len(FEATURES)) + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    return x, y


def kinds(n: int) -> list[str]:
    """Each model's size class, in name order, mixed (the big ones are not all at the end)."""
    out: list[str] = []
    for kind, (share, *_) in SIZES.items():
        out += [kind] * (round(n * share) if kind != "small" else 0)
    out += ["small"] * (n - len(out))
    random.Random(7).shuffle(out)
    return out


def generate(out: Path, n: int = 1000, remote: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Model files under ``out/models`` and ``out/portfolio.toml``; returns {"file", "models" (names by
    popularity, hottest first), "weights", "kinds"}."""
    models_dir = out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    classes = kinds(n)
    fitted: dict[str, list[Path]] = {}
    started = time.monotonic()
    for kind, (_share, trees, depth, fits) in SIZES.items():
        if trees == 0 or kind not in classes:
            continue
        fitted[kind] = []
        for i in range(fits):
            x, y = data(100 + i, rows=6000 if kind != "forest" else 3000)
            forest = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=i, n_jobs=2)
            path = models_dir / f"_{kind}{i}.joblib"
            joblib.dump(forest.fit(x, y), path)
            fitted[kind].append(path)
    tables: dict[str, Any] = {}
    names = [f"m{i:04d}" for i in range(n)]
    for i, (name, kind) in enumerate(zip(names, classes, strict=True)):
        path = models_dir / f"{name}.joblib"
        if kind == "small":
            x, y = data(i, rows=400)
            joblib.dump(LogisticRegression().fit(x, y), path)
        else:
            shutil.copyfile(fitted[kind][i % len(fitted[kind])], path)
        tiers: list[dict[str, Any]] = []
        if remote is not None and i % REMOTE_EVERY == REMOTE_EVERY - 1:
            tiers.append(
                {"name": "engine", "kind": "oip", "url": remote, "model_name": "fleet", "timeout_ms": 40}
            )
        tiers.append({"name": "cpu", "kind": "python", "path": str(path), "timeout_ms": 60})
        tiers.append({"kind": "default", "value": 0.5})
        inputs = [{"name": f, "min": 0.0, "max": 1.0} for f in FEATURES]
        tables[name] = {"deadline_ms": 100, "inputs": inputs, "tiers": tiers}
        if progress and (i + 1) % 100 == 0:
            print(f"  {i + 1}/{n} models written ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    for extra in [p for kind in fitted.values() for p in kind]:
        extra.unlink()
    doc = {
        "data_dir": str(out / "state"),
        "trusted_model_dirs": [str(models_dir)],
        "store": {"log_predictions": False},
        "models": tables,
    }
    file = out / "portfolio.toml"
    file.write_text(tomli_w.dumps(doc))
    order = names[:]
    random.Random(11).shuffle(order)  # popularity is not name order
    return {
        "file": file,
        "models": order,
        "weights": zipf_weights(n),
        "kinds": dict(zip(names, classes, strict=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--remote", help="the OIP backend's root URL for the remote tiers")
    args = ap.parse_args()
    made = generate(args.out, args.models, args.remote)
    size = sum(p.stat().st_size for p in (args.out / "models").iterdir())
    print(f"{made['file']}: {args.models} models, {size / 1e6:.0f} MB of model files")


if __name__ == "__main__":
    main()
