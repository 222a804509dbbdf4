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
from failsoft.store import StoreError, open_store
from failsoft.store.base import LogReader


def _store(args: argparse.Namespace) -> LogReader:
    """Where the log is read: ``--lake``, ``--store``, else the portfolio's (its lake when the log goes to a
    stream)."""
    if args.lake:
        from failsoft.store.lake_read import LakeLog

        return LakeLog(Path(args.lake))
    if args.store:
        store = open_store(args.store)
        store.connect()
        return store
    from failsoft.store.lake_read import log_reader

    return log_reader(config.load(args.portfolio))


def _land(args: argparse.Namespace) -> int:
    from failsoft.store.lake import Lake, run_land

    try:
        spec = config.load(args.portfolio) if (args.portfolio and not (args.nats and args.lake)) else None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    url = args.nats or (spec.store.log if spec else None)
    lake = Path(args.lake) if args.lake else (spec.lake_dir() if spec else None)
    if not url or lake is None:
        print("error: the stream and the lake are needed: [store] log and [store] lake in portfolio.toml, "
              "or --nats URL --lake DIR", file=sys.stderr)  # fmt: skip
        return 2
    stream = args.stream or (spec.store.stream.name if spec else "FAILSOFT_PREDICTIONS")
    subject = args.subject or (spec.store.stream.subject if spec else "failsoft.predictions")

    def progress(state: Lake) -> None:
        if not args.quiet:
            print(f"landed {state.landed} rows in {state.files} files (stream sequence {state.landed_seq}; "
                  f"{state.skipped} already landed, {state.duplicates} duplicates)", flush=True)  # fmt: skip

    try:
        state = run_land(url, lake, stream, subject, args.durable, args.flush_s, args.max_rows,
                         args.until_idle, progress)  # fmt: skip
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the broker's words: what is wrong is for a person to see
        print(f"error: {url}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"{state.landed} rows landed in {lake}")
    return 0


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
    e.add_argument("--lake", default=None, help="a lake's folder instead of --portfolio")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_export)

    lg = sub.add_parser("log", help="the prediction log on a stream: land it in the lake")
    lsub = lg.add_subparsers(dest="log_command", required=True)
    la = lsub.add_parser("land", help="land the stream as Parquet by model and hour (a durable consumer)")
    la.add_argument("--portfolio", default="portfolio.toml", help="[store] log and lake are read from it")
    la.add_argument("--nats", default=None, help="the stream's server, nats://host:4222 (else [store] log)")
    la.add_argument("--lake", default=None, help="the lake's folder (else [store] lake)")
    la.add_argument("--stream", default=None, help="the stream's name (else [store.stream] name)")
    la.add_argument("--subject", default=None, help="the stream's subject (else [store.stream] subject)")
    la.add_argument("--durable", default="failsoft-lander", help="the consumer's durable name")
    la.add_argument("--flush-s", type=float, default=10.0, help="seconds between files")
    la.add_argument("--max-rows", type=int, default=200_000, help="rows that make a flush sooner")
    la.add_argument("--until-idle", type=float, default=None, metavar="S",
                    help="stop once nothing came for S seconds (default: run until stopped)")  # fmt: skip
    la.add_argument("--quiet", action="store_true")
    la.set_defaults(fn=_land)
