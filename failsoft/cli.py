"""The ``failsoft`` command: serve, check, demo, health, export, audits."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from failsoft import config, env, gateway
from failsoft.durations import parse_duration
from failsoft.errors import ConfigError
from failsoft.store import Store, StoreError, open_store
from failsoft.terminal import working
from failsoft.types import Health


def _check(args: argparse.Namespace) -> int:
    from failsoft.introspect import describe
    from failsoft.portfolio import Portfolio

    loaded: dict[str, list[str]] = {}
    try:
        spec = config.load(args.portfolio)
        if args.load:

            async def load() -> None:
                portfolio = Portfolio(spec)
                await portfolio.start()
                for model in msgspec.to_builtins(describe(portfolio.chains, portfolio.metrics)):
                    loaded[model["name"]] = [_how_it_runs(t) for t in model["chain"]]
                await portfolio.close()

            asyncio.run(load())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, model in spec.models.items():
        chain = " -> ".join(
            f"{t.name} ({type(t).__name__.removesuffix('TierSpec').lower()})" for t in model.tiers
        )
        print(f"{name}: deadline {model.deadline_ms} ms, {len(model.inputs)} inputs, {chain}")
        for line in loaded.get(name, []):
            if line:
                print(f"  {line}")
    print(f"{args.portfolio}: ok")
    return 0


def _how_it_runs(tier: dict[str, object]) -> str:
    """One line on how a loaded in-process tier answers (compiled or not, on the loop or in threads)."""
    if "compiled" not in tier:
        return ""
    if tier.get("run") == "process":
        return (
            f"{tier['name']}: runs in {tier['processes']} worker processes (a call past its timeout "
            "kills and replaces its worker)"
        )
    if not tier["compiled"]:
        return (
            f"{tier['name']}: runs as it is, in its threads; can hold the interpreter (a model stuck in "
            'pure Python slows every model): run = "process" isolates it'
        )
    where = "on the event loop" if tier["inline"] else "in its threads"
    rows = tier.get("inline_rows")
    if tier["inline"] and rows is not None:
        where += f" up to {rows} rows a call (more in its threads)"
    own = tier.get("own_method_from_rows")
    switch = f"; its own method from {own} rows" if own else ""
    return f"{tier['name']}: compiled, {tier['single_row_us']} µs a row, {where}{switch}"


def _serve(args: argparse.Namespace) -> int:
    from failsoft.portfolio import Portfolio
    from failsoft.server.auth import load_tokens
    from failsoft.server.run import serve

    try:
        spec = config.load(args.portfolio)
        portfolio = Portfolio(spec)
        tokens_file = env.get(env.TOKENS_FILE) or spec.server.tokens_file
        tokens = load_tokens(
            env.environ(), spec.resolve(tokens_file) if tokens_file else None, spec.resolve(spec.data_dir)
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    serve(portfolio, args.host, args.port, args.log_level, tokens)
    return 0


def _store(args: argparse.Namespace) -> Store:
    url = args.store or config.load(args.portfolio).store_url()
    store = open_store(url)
    store.connect()
    return store


def _health(args: argparse.Namespace) -> int:
    """Through the gateway's control plane, like every other change: the token's owner is recorded, and
    every replica applies it (a notification on PostgreSQL, the next state poll otherwise)."""
    try:
        doc = gateway.call(
            args, "POST", f"/v1/models/{args.model}/health", {"health": args.health, "reason": args.reason}
        )
    except gateway.Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    print(f"{doc['model']}: {doc['health']} (revision {doc['revision']}, by {doc['changed_by']}); every "
          "replica applies it")  # fmt: skip
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
        n = export_predictions(store, Path(args.out), since=since, model=args.model, progress=not args.quiet)
    except (ConfigError, StoreError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} predictions written to {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from failsoft.demo.run import run_demo

    return run_demo(
        duration=args.duration,
        port=args.port,
        data_dir=args.data_dir,
        faults=not args.no_faults,
        as_json=args.json,
        keep_serving=args.keep_serving,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="failsoft", description="Every prediction answered within its deadline.")
    p.set_defaults(progress=False)  # long offline commands set it: a progress line on a terminal
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve a portfolio over HTTP (Open Inference Protocol v2 and JSON)")
    s.add_argument("portfolio", help="path of portfolio.toml")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check", help="validate portfolio.toml; errors name the file, the key and the fix")
    c.add_argument("portfolio")
    c.add_argument("--load", action="store_true", help="also load every model and compute every default")
    c.set_defaults(fn=_check)

    h = sub.add_parser(
        "health", help="set a model's health for every replica (quarantine, restore), through the gateway"
    )
    h.add_argument("model")
    h.add_argument("health", choices=[x.value for x in Health])
    h.add_argument("--reason", default="")
    gateway.add_options(h)
    h.set_defaults(fn=_health)

    e = sub.add_parser("export", help="export the prediction log to Parquet for DuckDB or pandas")
    e.add_argument("what", choices=["predictions"])
    e.add_argument("--out", required=True, help="the .parquet (or .csv) file to write")
    e.add_argument(
        "--since", default="0", help="ISO date/time, epoch seconds, or a span such as 7d (default: all)"
    )
    e.add_argument("--model", default=None)
    e.add_argument("--portfolio", default="portfolio.toml", help="where the store is configured")
    e.add_argument("--store", default=None, help="a store URL instead of --portfolio")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_export)

    from failsoft.audit import commands as audit_commands
    from failsoft.features import commands as feature_commands
    from failsoft.monitor import commands as monitor_commands
    from failsoft.shadow import commands as shadow_commands

    for verbs in (audit_commands, feature_commands, shadow_commands, monitor_commands):
        verbs.add_commands(sub)

    d = sub.add_parser("demo", help="train small models, start a backend and the gateway, inject faults")
    d.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    d.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    d.add_argument("--data-dir", default="failsoft-demo", help="where models, data and logs go")
    d.add_argument("--no-faults", action="store_true", help="run healthy traffic only")
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object, last line")
    d.add_argument(
        "--keep-serving", action="store_true", help="after the summary, keep the gateway up until Ctrl-C"
    )
    d.set_defaults(fn=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with working(f"failsoft {args.command}", getattr(args, "quiet", False) or not args.progress):
            code: int = args.fn(args)
    except BrokenPipeError:
        # the reader went away (`failsoft history --json | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
