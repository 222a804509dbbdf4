"""``failsoft features`` (ingest, build, status) and ``failsoft leakage audit``: the point-in-time feature
store from the command line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from failsoft.durations import format_duration, parse_duration
from failsoft.errors import ConfigError
from failsoft.terminal import console


@contextlib.contextmanager
def _warnings_said() -> Iterator[None]:
    """Feature-data warnings printed as one 'warning:' line each, not as Python's file:line notices."""
    from failsoft.features.store import FeatureDataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FeatureDataWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, FeatureDataWarning):
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _features(args: argparse.Namespace) -> int:
    from failsoft.features import FeatureStore

    store = FeatureStore(args.root)
    try:
        with _warnings_said():
            if args.verb == "ingest":
                return _ingest(store, args)
            if args.verb == "status":
                return _features_status(store, args.table or store.names(), args.json)
            return _build(store, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _ingest(store: Any, args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl) if args.ttl else None
    except ValueError as err:
        print(f"error: --ttl {err}", file=sys.stderr)
        return 2
    if args.feast_repo:
        return _ingest_feast(store, args.feast_repo, args.name)
    if not (args.name and args.source and args.entity):
        print("error: ingest needs --name, --source and --entity (or --feast-repo)", file=sys.stderr)
        return 2
    t = store.ingest(
        args.name,
        args.source,
        entity=args.entity,
        event_time=args.event_time_column,
        available_at=args.available_at_column,
        ttl_s=ttl,
    )
    _said_ingested(t)
    return 0


def _said_ingested(t: Any) -> None:
    shown = format_duration(t.ttl_s) if t.ttl_s else "none"
    print(f"{t.name}: entity {', '.join(t.entity)}; features {', '.join(t.features)}; ttl {shown}")


def _ingest_feast(store: Any, repo: str, only: str | None) -> int:
    from failsoft.features.feast_repo import feast_views

    views, skipped = feast_views(repo)
    for note in skipped:
        print(f"warning: skipped feature view {note}", file=sys.stderr)
    chosen = [v for v in views if only is None or v.name == only]
    if not chosen:
        known = ", ".join(v.name for v in views) or "none readable"
        print(f"error: no feature view {only!r} in {repo} (it has: {known})", file=sys.stderr)
        return 2
    for v in chosen:
        t = store.ingest(v.name, v.path, entity=v.entity, event_time=v.event_time,
                         available_at=v.available_at, ttl_s=v.ttl_s)  # fmt: skip
        _said_ingested(t)
    return 0


def _build(store: Any, args: argparse.Namespace) -> int:
    from failsoft.features import build_training_set

    if not (args.spine and args.table and args.out):
        print("error: build needs --spine, --table (one or more) and --out", file=sys.stderr)
        return 2
    table = build_training_set(store, args.spine, args.table, out=args.out, time_col=args.spine_time_column)
    print(f"{table.num_rows} rows, {table.num_columns} columns written to {args.out}")
    return 0


def _features_status(store: Any, names: list[str], as_json: bool) -> int:
    """Feature latency per table: how late values land, and how long ago the newest one did."""
    import json

    docs = [store.lag(n) for n in names]
    if as_json:
        print(json.dumps(docs, indent=2))
        return 0
    from rich.table import Table

    t = Table("table", "rows", "entities", "lag p50", "lag p95", "lag max", "newest landed")
    for d in docs:
        lag = d.get("lag_s") or {}
        t.add_row(
            d["table"],
            str(d["rows"]),
            str(d["entities"]),
            *(format_duration(lag[k]) if k in lag else "-" for k in ("p50", "p95", "max")),
            f"{format_duration(d['newest_age_s'])} ago" if "newest_age_s" in d else "-",
        )
    console().print(t)
    return 0


def _leakage(args: argparse.Namespace) -> int:
    import json

    from failsoft.features import FeatureStore
    from failsoft.features.leakage import audit

    try:
        with _warnings_said():
            report = audit(
                FeatureStore(args.root),
                args.spine,
                args.table,
                args.label,
                args.split,
                args.spine_time_column,
            )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, default=str))
    else:
        from rich.table import Table

        t = Table(title="leakage audit")
        for col in ("table", "feature", "verdict", "reason"):
            t.add_column(col)
        for f in report["features"]:
            color = {"ok": "green", "late": "cyan", "suspicious": "yellow", "leak": "red"}[f["verdict"]]
            t.add_row(f["table"], f["feature"], f"[{color}]{f['verdict']}[/]", f["reason"])
        console().print(t)
        print(", ".join(f"{v} {k}" for k, v in report["summary"].items()))
    if args.html:
        from failsoft.reports import leakage_page

        Path(args.html).write_text(leakage_page(report))
    return 1 if report["summary"]["leak"] else 0


def add_commands(sub: Any) -> None:
    f = sub.add_parser("features", help="the point-in-time feature store: ingest tables, build training sets")
    f.add_argument("verb", choices=["ingest", "build", "status"])
    f.add_argument("--root", default="failsoft-data/features", help="where feature tables are kept")
    f.add_argument("--name", help="ingest: the table's name")
    f.add_argument("--source", help="ingest: a .parquet or .csv file")
    f.add_argument("--entity", action="append", default=[], help="ingest: an entity key column (repeatable)")
    f.add_argument(
        "--event-time-column",
        default="event_time",
        help="ingest: when each value happened (Feast: event_timestamp)",
    )
    f.add_argument(
        "--available-at-column",
        default="available_at",
        help="ingest: when each row landed (Feast: created); without one, rows are stamped as landed now",
    )
    f.add_argument(
        "--feast-repo", help="ingest: every file-backed feature view of this Feast repository (--name: one)"
    )
    f.add_argument(
        "--spine-time-column", default="prediction_time", help="build: the spine's prediction time column"
    )
    f.add_argument("--ttl", default=None, help="ingest: values older than this are not used, e.g. 30d")
    f.add_argument("--spine", help="build: .parquet/.csv with the entity keys and prediction_time")
    f.add_argument("--table", action="append", default=[], help="build, status: a feature table (repeatable)")
    f.add_argument("--json", action="store_true", help="status: as JSON")
    f.add_argument("--out", help="build: the training set to write (.parquet or .csv)")
    f.add_argument("--quiet", action="store_true", help="no progress line")
    f.set_defaults(fn=_features, progress=True)

    lk = sub.add_parser("leakage", help="audit training data for label leakage (exit code 1 on a leak)")
    lk.add_argument("verb", choices=["audit"])
    lk.add_argument("--root", default="failsoft-data/features", help="where feature tables are kept")
    lk.add_argument("--spine", required=True, help=".parquet/.csv: entity keys, prediction_time, the label")
    lk.add_argument("--table", action="append", default=[], required=True)
    lk.add_argument("--label", required=True)
    lk.add_argument("--split", default=None, help="a column saying train or test")
    lk.add_argument(
        "--spine-time-column", default="prediction_time", help="the spine's prediction time column"
    )
    lk.add_argument("--json", action="store_true")
    lk.add_argument("--html", default=None, help="also write the report as an HTML page")
    lk.add_argument("--quiet", action="store_true", help="no progress line")
    lk.set_defaults(fn=_leakage, progress=True)
