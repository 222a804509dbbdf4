"""Delayed ground truth: labels that arrive hours or weeks after the prediction, joined to the prediction
log by request id, late or out of order.

One label per request id (a batch request's label is a list, one per row). Sending the same label again
changes nothing; sending a different one corrects it (the newest wins). Labels for requests not (yet) in
the log are kept: the log may be behind, and they join when it catches up.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from failsoft.errors import InvalidRequest
from failsoft.store import Store
from failsoft.store.labels import LabelRow, Labels
from failsoft.terminal import step

__all__ = ["Label", "LabelsBody", "LabelsRequest", "ingest_file", "save_labels"]

BATCH = 5_000


class Label(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    label: Any
    # when the outcome happened: epoch seconds or an ISO date/time (default: when received)
    time: float | str | None = None


class LabelsBody(msgspec.Struct):
    labels: list[Label]


# What POST /v1/labels takes: ``[{"id", "label", "time"?}, ...]`` or ``{"labels": [...]}``.
LabelsRequest = list[Label] | LabelsBody


def _epoch(value: float | str | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"labels: time {value!r} is not epoch seconds or an ISO date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def save_labels(store: Store, labels: Iterable[Label]) -> int:
    """Write labels in one transaction per batch; returns how many were given."""
    now = time.time()
    rows: list[LabelRow] = []
    for lab in labels:
        if lab.label is None:
            raise InvalidRequest(f"labels: id {lab.id!r} has no label")
        rows.append((str(lab.id), msgspec.json.encode(lab.label).decode(), _epoch(lab.time, now), now))

    repo = Labels(store)
    for start in range(0, len(rows), BATCH):
        repo.save(rows[start : start + BATCH])
    return len(rows)


def ingest_file(store: Store, path: str | Path, id_column: str = "id", label_column: str = "label",
                time_column: str = "time", progress: bool = True) -> int:  # fmt: skip
    """Bulk-load labels from CSV, Parquet or JSON lines (columns id, label, optional time)."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        records: Iterable[dict[str, Any]] = table.to_pylist()
    elif p.suffix == ".csv":
        import csv

        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            records = list(reader)
        _need_columns(p, list(reader.fieldnames or []), id_column, label_column)
        for r in records:  # CSV holds text: numbers back to numbers
            r[label_column] = _csv_value(r.get(label_column))
            r[time_column] = _csv_value(r.get(time_column) or None)
    elif p.suffix in {".jsonl", ".ndjson"}:
        records = [msgspec.json.decode(line) for line in p.read_bytes().splitlines() if line.strip()]
    else:
        raise InvalidRequest(f"{p}: unsupported file; use .csv, .parquet or .jsonl")
    rows = list(records)
    if rows:
        _need_columns(p, list(rows[0]), id_column, label_column)
    total = 0
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        total += save_labels(
            store,
            (Label(str(r[id_column]), r[label_column], _time(r.get(time_column))) for r in chunk),
        )
        if progress:
            step(f"{total:,} of {len(rows):,} labels saved")
    return total


def _need_columns(path: Path, have: list[str], *need: str) -> None:
    from failsoft.config import suggest

    for column in need:
        if column not in have:
            hint = suggest(column, have)
            raise InvalidRequest(
                f"{path}: no column {column!r} (it has {', '.join(have) or 'none'})"
                + (f"; {hint} rename it to {column!r}" if hint else "")
                + f": a labels file needs the columns {', '.join(need)} (and optionally time)"
            )


def _time(v: Any) -> float | str | None:
    if v is None or isinstance(v, float | int | str):
        return v
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp()
    return str(v)


def _csv_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
