"""``failsoft export``: the prediction log, one row per prediction, as Parquet, CSV or JSON lines for
DuckDB, polars or pandas."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from failsoft import config
from failsoft.durations import parse_duration
from failsoft.errors import ConfigError
from failsoft.store import Store, StoreError, open_store


def _store(args: argparse.Namespace) -> Store:
    url = args.store or config.load(args.portfolio).store_url()
    store = open_store(url)
    store.connect()
    return store


def _since(text: str) -> float:
    """An epoch, an ISO date/time, or a span back from now: 30m, 12h, 7d."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def _export(args: argparse.Namespace) -> int:
    from failsoft.store.export import export_predictions

    try:
        since = _since(args.since)
    except ValueError:
        print(f"error: --since {args.since!r}: use an ISO date, an epoch, or a span like 7d", file=sys.stderr)
        return 2
    try:
        store = _store(args)
        if args.model is not None and not store.count_predictions(args.model):
            from failsoft.config import suggest

            logged = store.logged_models()
            hint = suggest(args.model, logged)
            known = ", ".join(logged) or "none"
            print(f"error: --model {args.model!r}: no predictions of it in the log (logged: {known})"
                  + (f"; {hint}" if hint else ""), file=sys.stderr)  # fmt: skip
            return 2
        n, requests = export_predictions(
            store, Path(args.out), since=since, model=args.model, progress=not args.quiet
        )
    except (ConfigError, StoreError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} predictions ({requests} requests) written to {args.out}")
    return 0


def add_commands(sub: Any) -> None:
    e = sub.add_parser(
        "export", help="export the prediction log, a row per prediction, for DuckDB, polars or pandas"
    )
    e.add_argument("what", choices=["predictions"])
    e.add_argument(
        "--out", required=True, help="the file to write: .parquet, .csv or .jsonl (the name says which)"
    )
    e.add_argument(
        "--since", default="0", help="ISO date/time, epoch seconds, or a span such as 7d (default: all)"
    )
    e.add_argument("--model", default=None)
    e.add_argument("--portfolio", default="portfolio.toml", help="where the store is configured")
    e.add_argument("--store", default=None, help="a store URL instead of --portfolio")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_export)
