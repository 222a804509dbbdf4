"""The prediction log as a Parquet (or CSV) file, for offline analysis with DuckDB, polars or pandas."""

from __future__ import annotations

from pathlib import Path

from rich.progress import Progress

from failsoft.store.base import PREDICTION_COLUMNS, Store

FORMATS = (".parquet", ".csv")


def export_predictions(
    store: Store,
    out: Path,
    since: float = 0.0,
    model: str | None = None,
    progress: bool = True,
    batch: int = 50_000,
) -> int:
    """Stream predictions with ts >= since into ``out`` (Parquet, or CSV for a .csv name), batch by batch,
    the live answers first and then the shadow candidates' (role "shadow", a row per request); returns the
    row count."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the extra is missing
        raise SystemExit("export needs pyarrow: pip install 'failsoft[parquet]'") from None
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: write to a {' or '.join(FORMATS)} file (the name says which)")
    text, number = pa.string(), pa.float64()
    schema = pa.schema(
        [(name, text) for name in PREDICTION_COLUMNS[:6]]
        + [("degraded", pa.bool_()), ("reason", text), ("outputs", text), ("inputs", text)]
        + [("latency_ms", number), ("ts", pa.timestamp("us", tz="UTC"))]
    )
    total = 0
    tmp = out.with_suffix(out.suffix + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    opened = pacsv.CSVWriter(tmp, schema) if suffix == ".csv" else pq.ParquetWriter(tmp, schema)
    with opened as writer, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("exporting predictions", total=None)
        pages = (
            rows
            for shadow in (False, True)
            for rows in store.iter_predictions(since=since, model=model, batch=batch, shadow=shadow)
        )
        for rows in pages:
            cols = list(zip(*rows, strict=True))
            data = {name: list(col) for name, col in zip(PREDICTION_COLUMNS, cols, strict=True)}
            data["degraded"] = [bool(x) for x in data["degraded"]]
            data["ts"] = [int(x * 1_000_000) for x in data["ts"]]
            writer.write_table(pa.table(data, schema=schema))
            total += len(rows)
            bar.update(task, advance=len(rows), description=f"exporting predictions: {total}")
    tmp.replace(out)
    return total
