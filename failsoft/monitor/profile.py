"""A model's reference profile: what its inputs and predictions looked like when it was known to be good.

Per numeric feature: a sketch of the reference distribution (``SKETCH`` quantiles, with the reference's
own CDF at each of them), the deciles that make the PSI bins, the share per bin, the range and the missing
rate. Per categorical feature: category frequencies and the missing rate. The predictions get the same
treatment, and with labelled reference data a binary classifier's calibration map (for performance
estimation before labels arrive). The profile is a small JSON file referenced from ``portfolio.toml``:

>>> profile = build(read_table("reference.parquet"), features=["age", "plan"],   # doctest: +SKIP
...                 prediction="score", target="churned")
>>> profile.save("profiles/churn.json")                                           # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from failsoft.errors import FailsoftError
from failsoft.monitor.performance import Calibration, fit_calibration, realized

Array = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int64]

SKETCH = 1000  # quantile points kept per numeric feature: the KS statistic is exact to 1/SKETCH
BINS = 10  # PSI bins (reference deciles)
MAX_CATEGORIES = 1000  # more distinct values than this: the rarest are lumped as "other"
PREDICTION = "prediction"


class ProfileError(FailsoftError):
    """A profile that cannot be built or read (the message says which file or column, and the fix)."""


class Numeric(msgspec.Struct, tag="numeric", frozen=True):
    sketch: list[float]  # SKETCH reference quantiles, ascending (repeats where values repeat)
    cdf: list[float]  # the reference's own CDF at each sketch point (share of rows <= it)
    edges: list[int]  # indices into the sketch that close each PSI bin but the last
    proportions: list[float]  # reference share per PSI bin
    min: float
    max: float
    missing: float  # share of reference rows with no value
    n: int  # reference rows with a value


class Categorical(msgspec.Struct, tag="categorical", frozen=True):
    categories: list[str]
    proportions: list[float]  # per category, then "other" (categories past MAX_CATEGORIES)
    missing: float
    n: int


Reference = Numeric | Categorical


class Profile(msgspec.Struct, frozen=True, omit_defaults=True):
    features: dict[str, Reference]
    rows: int
    created_at: float
    source: str = ""
    prediction: Reference | None = None
    calibration: Calibration | None = None
    # the realized performance on the reference data itself (with a target): what "good" was
    reference_performance: dict[str, float] = msgspec.field(default_factory=dict)
    version: int = 1

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        try:
            return msgspec.json.decode(Path(path).read_bytes(), type=cls)
        except FileNotFoundError:
            raise ProfileError(f"{path}: no such profile (build one with `failsoft profile DATA`)") from None
        except msgspec.ValidationError as err:
            raise ProfileError(
                f"{path}: not a failsoft profile ({err}); rebuild it with `failsoft profile`"
            ) from None
        except msgspec.DecodeError as err:
            raise ProfileError(f"{path}: not JSON ({err}); rebuild it with `failsoft profile`") from None

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "source": self.source,
            "created_at": self.created_at,
            "features": {n: type(r).__name__.lower() for n, r in self.features.items()},
            "prediction": type(self.prediction).__name__.lower() if self.prediction else None,
            "calibrated": self.calibration is not None,
            "reference_performance": self.reference_performance,
        }


# ---- columns ---------------------------------------------------------------------------------------------


class Coded:
    """Category strings held as codes into their distinct values (as read from a file: a million rows
    of a few categories are a million small ints, not a million Python strings). -1: missing."""

    __slots__ = ("categories", "codes")

    def __init__(self, codes: Codes, categories: list[str]) -> None:
        self.codes, self.categories = codes, categories

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str | None:
        c = int(self.codes[i])
        return None if c < 0 else self.categories[c]

    def __iter__(self) -> Any:
        cats = self.categories
        return (None if c < 0 else cats[c] for c in self.codes.tolist())


class Column(msgspec.Struct, frozen=True):
    """One column read for profiling or drift: float values (NaN missing) or category strings."""

    name: str
    kind: Literal["numeric", "categorical"]
    values: Any  # float64 array, or an object array of str | None


def numeric_column(name: str, values: Iterable[Any]) -> Column:
    arr = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    return Column(name, "numeric", arr)


def categorical_column(name: str, values: Iterable[Any]) -> Column:
    return Column(
        name, "categorical", np.array([None if v is None else str(v) for v in values], dtype=object)
    )


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> dict[str, Column]:
    """A CSV or Parquet file as columns (numeric ones as float64 with NaN for missing; booleans and
    strings as categories). Needs pyarrow (``pip install 'failsoft[parquet]'``)."""
    path = Path(path)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        raise ProfileError("reading data files needs pyarrow: pip install 'failsoft[parquet]'") from None
    if not path.exists():
        raise ProfileError(f"{path}: no such file")
    if columns:
        _need_columns(path, list(columns))
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            table = pq.read_table(path, columns=list(columns) if columns else None)
        elif path.suffix.lower() in {".csv", ".txt", ".gz"}:
            opts = pacsv.ConvertOptions(include_columns=list(columns) if columns else None)
            table = pacsv.read_csv(path, convert_options=opts)
        else:
            raise ProfileError(f"{path}: unknown file type (use .csv or .parquet)")
    except (pa.ArrowInvalid, KeyError) as err:
        raise ProfileError(f"{path}: cannot read ({err})") from None
    out: dict[str, Column] = {}
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            out[name] = Column(name, "numeric", np.asarray(values, dtype=np.float64))
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            continue  # a time column describes the row, not the model's input
        else:
            coded = pc.dictionary_encode(pc.cast(col, pa.string())).combine_chunks()
            codes = pc.fill_null(coded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            out[name] = Column(name, "categorical", Coded(codes, coded.dictionary.to_pylist()))
    return out


def _need_columns(path: Path, columns: list[str]) -> None:
    """A ProfileError naming each missing column, the file's columns and the closest one."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from failsoft.config import suggest

    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            have = pq.read_schema(path).names
        elif path.suffix.lower() in {".csv", ".txt", ".gz"}:
            have = pacsv.open_csv(path).schema.names
        else:
            return
    except Exception:
        return  # unreadable: the read itself says why
    for column in columns:
        if column not in have:
            hint = suggest(column, have)
            raise ProfileError(
                f"{path}: no column {column!r} (it has {', '.join(have)})" + (f"; {hint}" if hint else "")
            )


_ARRAYS: dict[int, tuple[list[float], Array]] = {}


def array_of(values: list[float]) -> Array:
    """A profile's list as an array, converted once (profiles are few and live long)."""
    hit = _ARRAYS.get(id(values))
    if hit is None or hit[0] is not values:
        if len(_ARRAYS) > 4096:
            _ARRAYS.clear()
        hit = _ARRAYS[id(values)] = (values, np.asarray(values, dtype=np.float64))
    return hit[1]


def encode(ref: Categorical, values: Any) -> Codes:
    """Category codes against a reference: 0..K-1 known, K unseen (or lumped), -1 missing."""
    index = {c: i for i, c in enumerate(ref.categories)}
    other = len(ref.categories)
    if isinstance(values, Coded):
        lookup = np.array([index.get(c, other) for c in values.categories] + [-1], dtype=np.int64)
        return lookup[values.codes]  # code -1 picks the trailing -1
    return np.fromiter(
        (-1 if v is None else index.get(v, other) for v in values), dtype=np.int64, count=len(values)
    )


def sketch_bins(ref: Numeric, values: Array) -> Codes:
    """Per value, the number of sketch points strictly below it (0..SKETCH): the fine bin KS works on."""
    return np.searchsorted(array_of(ref.sketch), values, side="left")


# ---- building --------------------------------------------------------------------------------------------


def _numeric(values: Array) -> Numeric:
    present = values[~np.isnan(values)]
    n = len(present)
    if n == 0:
        raise ProfileError("no values")
    srt = np.sort(present)
    sketch = np.quantile(srt, (np.arange(SKETCH) + 0.5) / SKETCH, method="inverted_cdf")
    cdf = np.searchsorted(srt, sketch, side="right") / n
    # PSI bins close at reference deciles (as sketch indices), merged where values repeat
    deciles = np.searchsorted(sketch, np.quantile(srt, np.arange(1, BINS) / BINS), side="right") - 1
    edges = sorted({int(i) for i in deciles if 0 <= i < SKETCH - 1})
    fine = np.bincount(np.searchsorted(sketch, srt, side="left"), minlength=SKETCH + 1)
    coarse = np.add.reduceat(fine, [0, *(e + 1 for e in edges)])
    return Numeric(
        sketch=sketch.tolist(),
        cdf=cdf.tolist(),
        edges=edges,
        proportions=(coarse / n).tolist(),
        min=float(srt[0]),
        max=float(srt[-1]),
        missing=float(1 - n / len(values)),
        n=n,
    )


def _categorical(values: Any) -> Categorical:
    if isinstance(values, Coded):
        counts = np.bincount(values.codes[values.codes >= 0], minlength=len(values.categories))
        cats = np.array(values.categories, dtype=object)
        present_n = int(counts.sum())
        keep = counts > 0
        cats, counts = cats[keep], counts[keep]
    else:
        present = [v for v in values if v is not None]
        present_n = len(present)
        cats, counts = (
            np.unique(np.asarray(present, dtype=object).astype(str), return_counts=True)
            if present
            else (np.array([]), np.array([], dtype=np.int64))
        )
    if present_n == 0:
        raise ProfileError("no values")
    order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    kept = counts[order]
    other = present_n - int(kept.sum())
    props = np.append(kept, other) / present_n
    return Categorical(
        categories=[str(c) for c in cats[order]],
        proportions=props.tolist(),
        missing=float(1 - present_n / len(values)),
        n=present_n,
    )


def reference(col: Column) -> Reference:
    try:
        return _numeric(col.values) if col.kind == "numeric" else _categorical(col.values)
    except ProfileError as err:
        raise ProfileError(f"column {col.name}: {err}") from None


def build(
    columns: dict[str, Column],
    features: Sequence[str],
    prediction: str | None = None,
    score: str | None = None,
    target: str | None = None,
    threshold: float = 0.5,
    source: str = "",
) -> Profile:
    """A profile of ``features`` (and the ``prediction`` column's distribution). With a ``target`` and a
    probability ``score`` column, also the calibration map for estimated performance and the reference's
    realized performance."""
    missing = [c for c in [*features, prediction, score, target] if c and c not in columns]
    if missing:
        raise ProfileError(
            f"no column {', '.join(missing)} in the data (it has: {', '.join(columns) or 'nothing'})"
        )
    refs = {name: reference(columns[name]) for name in features}
    pred_col = prediction or score
    pred = reference(columns[pred_col]) if pred_col else None
    calibration = None
    perf: dict[str, float] = {}
    if target and score:
        y = columns[target].values
        s = columns[score].values
        if columns[target].kind != "numeric" or columns[score].kind != "numeric":
            raise ProfileError(f"{target} and {score} must be numeric (0/1 target, probability score)")
        keep = ~(np.isnan(y) | np.isnan(s))
        calibration = fit_calibration(y[keep], s[keep], threshold)
        perf = realized("binary", y[keep], s[keep], threshold=threshold)
    rows = len(next(iter(columns.values())).values) if columns else 0
    return Profile(refs, rows, time.time(), source, pred, calibration, perf)
