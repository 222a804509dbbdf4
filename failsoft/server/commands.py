"""``failsoft serve``, ``check`` and ``health``: run a gateway, prove a portfolio file loads, and change a
model's health through a running gateway's control plane."""

from __future__ import annotations

import argparse
import asyncio
import functools
import socket
import sys
from typing import Any

import msgspec

from failsoft import config, control_client, env
from failsoft.errors import ConfigError
from failsoft.types import Health

# serve's exit codes: 2 a configuration error, 3 a tier that cannot answer (or a worker that cannot
# start), 4 an address it cannot listen on
EXIT_CANNOT_LISTEN = 4


def _check(args: argparse.Namespace) -> int:
    from failsoft.introspect import describe
    from failsoft.portfolio import Portfolio
    from failsoft.probe import Finding, prove

    loaded: dict[str, list[tuple[str, str]]] = {}
    findings: list[Finding] = []
    try:
        spec = config.load(args.portfolio)
        if args.load:

            async def load() -> None:
                portfolio = Portfolio(spec)
                await portfolio.start()
                try:
                    for model in msgspec.to_builtins(describe(portfolio.chains, portfolio.metrics)):
                        loaded[model["name"]] = [(t["name"], _how_it_runs(t)) for t in model["chain"]]
                    findings.extend(await prove(portfolio.chains))
                finally:
                    await portfolio.close()

            asyncio.run(load())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.load:
        missing = _missing_files(spec)
        for key, path in missing:
            if key.endswith(".source"):  # a default answers from its value or last good copy meanwhile
                print(f"warning: {args.portfolio}: {key}: {path} does not exist (the default answers from "
                      "its value or its last good copy until it does)", file=sys.stderr)  # fmt: skip
            else:
                print(f"error: {args.portfolio}: {key}: {path} does not exist (fix the path, or make the "
                      "file)", file=sys.stderr)  # fmt: skip
        if any(not key.endswith(".source") for key, _ in missing):
            return 2
    cannot = {(f.model, f.tier) for f in findings if f.severity == "error"}
    for name, model in spec.models.items():
        chain = " -> ".join(
            f"{t.name} ({type(t).__name__.removesuffix('TierSpec').lower()})" for t in model.tiers
        )
        print(f"{name}: deadline {model.deadline_ms} ms, {len(model.inputs)} inputs, {chain}")
        for tier, line in loaded.get(name, []):
            if line and (name, tier) not in cannot:  # how a tier that cannot answer runs is beside the point
                print(f"  {line}")
    for f in findings:
        print(f"{f.severity}: {f}", file=sys.stderr)
    errors = sum(f.severity == "error" for f in findings)
    if errors:
        print(f"{args.portfolio}: {errors} tier(s) cannot answer a sample row", file=sys.stderr)
        return 1
    if args.load:
        print(f"{args.portfolio}: ok" + (f" ({len(findings)} warning(s))" if findings else ""))
    else:
        print(f"{args.portfolio}: ok (its files are there; --load also loads every model and asks each tier "
              "for a sample row)")  # fmt: skip
    return 0


def _missing_files(spec: config.PortfolioSpec) -> list[tuple[str, str]]:
    """(key, path) of each file the portfolio names that is not there: model files, default sources,
    monitor profiles (what ``--load`` would fail on first)."""
    missing = []
    for name, model in spec.models.items():
        for kind, tiers in (("tiers", model.tiers), ("candidates", model.candidates)):
            for i, t in enumerate(tiers):
                path = getattr(t, "path", None) or getattr(t, "source", None)
                field = "path" if getattr(t, "path", None) else "source"
                if path and "://" not in path and not spec.resolve(path).exists():
                    missing.append((f"models.{name}.{kind}[{i}].{field}", path))
        profile = model.monitor.profile if model.monitor is not None else None
        if profile and not spec.resolve(profile).exists():
            missing.append((f"models.{name}.monitor.profile", profile))
    return missing


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
    from failsoft.server.workers import (
        cannot_listen,
        cores,
        listen,
        one_log_writer,
        supervise,
        worker_command,
    )
    from failsoft.store.log_client import log_options, writer_argv

    usable = cores()  # within the container's CPU quota: a file read, done once
    if args.workers != "auto" and (not args.workers.isdigit() or int(args.workers) < 1):
        print(f"error: --workers {args.workers}: give 1 or more, or auto (this machine lets failsoft use "
              f"{usable} cores)", file=sys.stderr)  # fmt: skip
        return 2
    workers = usable if args.workers == "auto" else int(args.workers)
    # The port first: one in use is said at once, not after every model has loaded.
    if args.socket_fd is not None:  # a worker: the supervisor bound it
        sock = socket.socket(fileno=args.socket_fd)
    else:
        try:
            sock = listen(args.host, args.port)
        except OSError as err:
            print(f"error: {cannot_listen(args.host, args.port, err)}", file=sys.stderr)
            return EXIT_CANNOT_LISTEN
    try:
        spec = config.load(args.portfolio)
        tokens_file = env.get(env.TOKENS_FILE) or spec.server.tokens_file
        # (made here when none exists: by the supervisor alone, so every worker reads the same one)
        tokens = load_tokens(
            env.environ(), spec.resolve(tokens_file) if tokens_file else None, spec.resolve(spec.data_dir)
        )
        if workers > 1 and args.socket_fd is None:  # the supervisor: the workers load the rest
            worker = [args.portfolio, "--log-level", args.log_level, "--http", args.http]
            if args.allow_unproven:
                worker.append("--allow-unproven")
            writer = None
            url = spec.log_url()
            if spec.store.log_predictions and one_log_writer(args.log_writer, url):
                spill, options = spec.resolve(spec.data_dir) / "spill", log_options(spec.store)
                writer = functools.partial(writer_argv, url, spill, options)
            return supervise(
                sock, workers, worker_command(worker), args.log_level, writer, spec.server.drain_s
            )
        portfolio = Portfolio(spec, log_socket=args.log_socket)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.socket_fd is None and workers == 1 and usable > 1:
        print(f"failsoft: serving from 1 process on a machine with {usable} cores; --workers {usable} "
              "serves from all of them", file=sys.stderr)  # fmt: skip
    how = {"http": args.http, "sock": sock, "worker": args.socket_fd is not None}
    return serve(portfolio, args.host, args.port, args.log_level, tokens, args.allow_unproven, **how)


def _health(args: argparse.Namespace) -> int:
    """Through the gateway's control plane, like every other change: the token's owner is recorded, and
    every replica applies it (a notification on PostgreSQL, the next state poll otherwise)."""
    try:
        doc = control_client.call(
            args, "POST", f"/v1/models/{args.model}/health", {"health": args.health, "reason": args.reason}
        )
    except control_client.Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    print(f"{doc['model']}: {doc['health']} (revision {doc['revision']}, by {doc['changed_by']}); every "
          "replica applies it")  # fmt: skip
    return 0


def _reload(args: argparse.Namespace) -> int:
    """The gateway reads its portfolio.toml again and applies it while serving; with the file's path, it is
    checked here first (a wrong file is said at once, and the gateway is not asked)."""
    if args.portfolio is not None:
        try:
            config.load(args.portfolio)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    try:
        doc = control_client.call(args, "POST", "/v1/reload", timeout_s=120)
    except control_client.Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    if args.json:
        import json

        print(json.dumps(doc, indent=2))
        return 0
    for what in ("added", "removed", "replaced"):
        if doc[what]:
            print(f"{what}: {', '.join(doc[what])}")
    print(f"{len(doc['added'])} added, {len(doc['removed'])} removed, {len(doc['replaced'])} replaced, "
          f"{doc['unchanged']} unchanged")  # fmt: skip
    if doc["restart_needed"]:
        print(f"changed, applied at the next start: {', '.join(doc['restart_needed'])}")
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve a portfolio over HTTP (Open Inference Protocol v2 and JSON)")
    s.add_argument("portfolio", help="path of portfolio.toml")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    s.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    s.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least a log line must matter to be written (default info)",
    )
    s.add_argument(
        "--allow-unproven",
        action="store_true",
        help="start even when a tier cannot answer a sample row (it is logged; a backend that is merely "
        "down never stops the start)",
    )
    s.add_argument(
        "--workers",
        default="1",
        help="serving processes on the one port, each with its own event loop and models (default 1; "
        "auto: one per core this process may use, within its container's CPU quota); a worker that dies "
        "is replaced",
    )
    s.add_argument(
        "--http",
        default="failsoft",
        choices=["failsoft", "uvicorn"],
        help="the HTTP protocol: failsoft's own edge (default, leaner), or uvicorn's",
    )
    s.add_argument(
        "--log-writer",
        default="auto",
        choices=["auto", "shared", "per-worker"],
        help="with --workers: one prediction-log writer for every worker, or one each; auto (default): "
        "shared with SQLite (one file takes one writer at a time), one each with PostgreSQL (they write "
        "in parallel)",
    )
    s.add_argument("--socket-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's socket
    s.add_argument("--log-socket", default=None, help=argparse.SUPPRESS)  # a worker's shared log writer
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check", help="validate portfolio.toml; errors name the file, the key and the fix")
    c.add_argument("portfolio")
    c.add_argument("--load", action="store_true", help="also load every model and compute every default")
    c.set_defaults(fn=_check)

    r = sub.add_parser(
        "reload",
        help="a running gateway reads its portfolio.toml again and applies it while serving (as SIGHUP)",
        description="Models added, removed and replaced while serving: requests in flight finish on the "
        "model they started on, unchanged models keep their breakers and health, and a file that is "
        "wrong changes nothing (the answer says why). Recorded in the audit log with the token's owner.",
    )
    r.add_argument("portfolio", nargs="?", help="the file, checked here first (optional)")
    r.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    control_client.add_options(r)
    r.set_defaults(fn=_reload)

    h = sub.add_parser(
        "health", help="set a model's health for every replica (quarantine, restore), through the gateway"
    )
    h.add_argument("model")
    h.add_argument("health", choices=[x.value for x in Health])
    h.add_argument("--reason", default="")
    control_client.add_options(h)
    h.set_defaults(fn=_health)
