"""The prediction log as a file an analyst can use: one row per prediction (a request of 500 rows is 500
rows), the answer as a typed ``output`` column and, when inputs are logged, one typed ``input_<name>``
column per input. Parquet, CSV or JSON lines, by the file's suffix: Parquet needs pyarrow (the ``parquet``
extra); CSV and JSON lines are written by the standard library and msgspec.

Types are found in a first pass over the rows (every value of a column: all integers is int64, any other
number float64, true/false bool, text string, a list of numbers a list of float64 (JSON text in CSV),
anything else JSON text), so the file has one schema whatever order the models come in; the second pass
writes it.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from rich.progress import Progress

from failsoft.store.base import PREDICTION_COLUMNS, LogReader

FORMATS = (".parquet", ".csv", ".jsonl")
# Every row: the request's record, which row of it, then the answer and the inputs.
META = ("record_id", "request_id", "row", "model", "version", "tier", "role", "degraded", "reason",
        "latency_ms", "ts")  # fmt: skip
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _value(text: Any) -> Any:
    if text is None or not isinstance(text, str | bytes):
        return text
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return text


def expand(records: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """Log records (PREDICTION_COLUMNS) as one dict per prediction."""
    for record in records:
        rec = dict(zip(PREDICTION_COLUMNS, record, strict=True))
        outputs, inputs = _value(rec["outputs"]), _value(rec["inputs"])
        if not isinstance(outputs, list):
            outputs = [outputs]
        head = {k: rec[k] for k in META if k != "row"}
        head["degraded"] = bool(head["degraded"])
        for i, out in enumerate(outputs):
            row = {**head, "row": i, "output": out}
            given = inputs[i] if isinstance(inputs, list) and i < len(inputs) else None
            if isinstance(given, dict):
                for name, v in given.items():
                    row[f"input_{name}"] = v
            yield row


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        return "vector"
    return "json"


def merge(kinds: set[str]) -> str:
    """One column type for the kinds of value seen in it."""
    if not kinds:
        return "string"
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds <= {"int", "float"}:
        return "float"
    return "json"


class Columns:
    """The typed columns of the export, learned from every row."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {"output": set()}

    def see(self, row: dict[str, Any]) -> None:
        for name, v in row.items():
            if name not in META and v is not None:
                self.kinds.setdefault(name, set()).add(_kind(v))

    def types(self) -> dict[str, str]:
        names = ["output", *sorted(n for n in self.kinds if n != "output")]
        return {n: merge(self.kinds.get(n, set())) for n in names}


def export_predictions(
    store: LogReader,
    out: Path,
    since: float = 0.0,
    model: str | None = None,
    progress: bool = True,
    batch: int = 20_000,
) -> tuple[int, int]:
    """Stream predictions with ts >= since into ``out``, the live answers first, then the shadow
    candidates' (role "shadow"); returns (predictions, requests) written."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: write to a {', '.join(FORMATS)} file (the name says which)")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:  # said before the log is read
        raise ValueError(
            f"{out}: export to Parquet needs pyarrow: pip install 'failsoft[parquet]' (or name a .csv or "
            ".jsonl file, which need nothing more)"
        )

    def pages() -> Iterator[list[tuple[Any, ...]]]:
        for shadow in (False, True):
            yield from store.iter_predictions(since=since, model=model, batch=batch, shadow=shadow)

    tmp = out.with_suffix(out.suffix + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with Progress(disable=not progress, transient=True) as bar:
        columns, requests = Columns(), 0
        task = bar.add_task("reading the log's columns", total=None)
        for page in pages():
            for row in expand(page):
                columns.see(row)
            requests += len(page)
            bar.update(task, advance=len(page), description=f"reading the log's columns: {requests} requests")
        types = columns.types()
        bar.update(task, description="exporting predictions", completed=0, total=requests)
        write = {".jsonl": _jsonl, ".csv": _csv}.get(suffix, _parquet)
        total = write(tmp, suffix, types, (list(expand(p)) for p in pages()), lambda n: bar.advance(task, n))
    tmp.replace(out)
    return total, requests


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def _jsonl(tmp: Path, suffix: str, types: dict[str, str], pages: Any, advance: Any) -> int:
    total = 0
    with tmp.open("wb") as fh:
        for rows in pages:
            for row in rows:
                row["ts"] = _iso(row["ts"])
                fh.write(_encode(row) + b"\n")
            total += len(rows)
            advance(len({r["record_id"] for r in rows}))
    return total


def _csv(tmp: Path, suffix: str, types: dict[str, str], pages: Any, advance: Any) -> int:
    """RFC 4180 CSV with a header: an empty field is a missing value, true/false a bool, ``ts`` ISO 8601
    in UTC, a list or any other structured value its JSON text."""
    names = [*META, *types]
    ts = names.index("ts")
    as_text = {n for n, k in types.items() if k in ("json", "vector")}
    total = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(names)
        for rows in pages:
            for row in rows:
                values = [row.get(name) for name in names]
                for i, name in enumerate(names):
                    v = values[i]
                    if isinstance(v, bool):
                        values[i] = "true" if v else "false"
                    elif v is not None and name in as_text:
                        values[i] = _encode(v).decode()
                values[ts] = _iso(row["ts"])
                out.writerow(values)
            total += len(rows)
            advance(len({r["record_id"] for r in rows}))
    return total


def _parquet(tmp: Path, suffix: str, types: dict[str, str], pages: Any, advance: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string(),
             "vector": pa.list_(pa.float64()), "json": pa.string()}  # fmt: skip
    text = pa.string()
    meta = [("record_id", text), ("request_id", text), ("row", pa.int32()), ("model", text),
            ("version", text), ("tier", text), ("role", text), ("degraded", pa.bool_()), ("reason", text),
            ("latency_ms", pa.float64()), ("ts", pa.timestamp("us", tz="UTC"))]  # fmt: skip
    schema = pa.schema(meta + [(name, arrow[kind]) for name, kind in types.items()])
    as_text = {n for n, k in types.items() if k == "json"}
    floats = {n for n, k in types.items() if k == "float"}
    total = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for rows in pages:
            data: dict[str, list[Any]] = {name: [] for name in schema.names}
            for row in rows:
                for name in schema.names:
                    v = row.get(name)
                    if v is not None and name in as_text:
                        v = _encode(v).decode()
                    elif v is not None and name in floats:
                        v = float(v)
                    data[name].append(v)
            data["ts"] = [int(t * 1_000_000) for t in data["ts"]]
            writer.write_table(pa.table(data, schema=schema))
            total += len(rows)
            advance(len({r["record_id"] for r in rows}))
    return total
