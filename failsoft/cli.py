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
from typing import Any

import msgspec

from failsoft import config
from failsoft.durations import format_duration, parse_duration
from failsoft.errors import ConfigError
from failsoft.store import Store, StoreError, open_store
from failsoft.terminal import console, stamp, working
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
                for model in describe(portfolio.chains, portfolio.metrics):
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
        tokens_file = os.environ.get("FAILSOFT_TOKENS_FILE") or spec.server.tokens_file
        tokens = load_tokens(
            os.environ, spec.resolve(tokens_file) if tokens_file else None, spec.resolve(spec.data_dir)
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


class _Refused(Exception):
    """A command line call of the gateway that could not be made (exit code 2) or that the gateway refused
    (exit code 1): the message says why."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _gateway(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Any:
    """The JSON answer of the gateway at --url (FAILSOFT_URL), with --token (FAILSOFT_ADMIN_TOKEN)."""
    import httpx

    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    url = args.url.rstrip("/") + path
    try:
        r = httpx.request(method, url, json=body, params=params, headers=headers, timeout=timeout_s)
    except httpx.TransportError as err:
        unset = "" if os.environ.get("FAILSOFT_URL") else " (FAILSOFT_URL is not set: the default was tried)"
        raise _Refused(
            f"cannot reach the gateway at {args.url}{unset}: {err}; set FAILSOFT_URL or pass --url"
        ) from None
    try:
        doc = r.json()
    except ValueError:
        problem = f"{url} answered HTTP {r.status_code} with no JSON: is it a failsoft gateway?"
        raise _Refused(problem) from None
    if r.status_code >= 400:
        said = doc.get("error", doc) if isinstance(doc, dict) else doc
        raise _Refused(f"HTTP {r.status_code}: {said}", code=1)
    return doc


def _add_gateway_options(p: argparse.ArgumentParser) -> None:
    url = os.environ.get("FAILSOFT_URL", "http://127.0.0.1:8000")
    p.add_argument("--url", default=url, help="the gateway (FAILSOFT_URL)")
    p.add_argument(
        "--token",
        default=os.environ.get("FAILSOFT_ADMIN_TOKEN"),
        help="a control-plane token (FAILSOFT_ADMIN_TOKEN); its owner is recorded",
    )


def _health(args: argparse.Namespace) -> int:
    """Through the gateway's control plane, like every other change: the token's owner is recorded, and
    every replica applies it (a notification on PostgreSQL, the next state poll otherwise)."""
    try:
        doc = _gateway(
            args, "POST", f"/v1/models/{args.model}/health", {"health": args.health, "reason": args.reason}
        )
    except _Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    print(f"{doc['model']}: {doc['health']} (revision {doc['revision']}, by {doc['changed_by']}); every "
          "replica applies it")  # fmt: skip
    return 0


def _audits(args: argparse.Namespace) -> int:
    import json

    if args.verb == "webhook-secret":
        from failsoft.audit.notify import new_secret

        print(new_secret())
        return 0
    base = "/v1/audits"
    if args.verb in {"show", "ack", "resolve"} and args.id is None:
        print(f"error: audits {args.verb} needs an item id", file=sys.stderr)
        return 2
    try:
        if args.verb == "list":
            params = {k: v for k, v in {"status": args.status, "model": args.model}.items() if v}
            doc = _gateway(args, "GET", base, params=params, timeout_s=10)
        elif args.verb == "log":
            params = {"model": args.model} if args.model else {}
            doc = _gateway(args, "GET", f"{base}/log", params=params)
        elif args.verb == "show":
            doc = _gateway(args, "GET", f"{base}/{args.id}", timeout_s=10)
        else:
            body: dict[str, object] = {"comment": args.comment}
            if args.verb == "resolve":
                if args.action is None:
                    print("error: resolve needs --action", file=sys.stderr)
                    return 2
                body["action"] = args.action
                if args.value is not None:
                    try:
                        body["value"] = json.loads(args.value)
                    except ValueError:
                        print(f"error: --value {args.value!r} is not JSON: write a number (0.2), a quoted "
                              """string ('"a"') or a list ('["a", "b"]')""", file=sys.stderr)  # fmt: skip
                        return 2
                if args.for_s is not None:
                    try:
                        body["for_s"] = parse_duration(args.for_s)
                    except ValueError as err:
                        print(f"error: --for {err}", file=sys.stderr)
                        return 2
            verb = "ack" if args.verb == "ack" else "resolve"
            doc = _gateway(args, "POST", f"{base}/{args.id}/{verb}", body)
    except _Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    _print_audits(args.verb, doc)
    return 0


def _print_audits(verb: str, doc: Any) -> None:
    from rich.table import Table

    out = console()
    if verb == "list":
        t = Table(title="audit items")
        for col in ("id", "model", "kind", "status", "opened", "why"):
            t.add_column(col)
        for item in doc["audits"]:
            t.add_row(str(item["id"]), item["model"], item["kind"], item["status"], stamp(item["opened_at"]),
                      _why(item["details"]))  # fmt: skip
        out.print(t)
    elif verb == "log":
        out.print(_trail(doc["log"], "audit trail"))
    elif verb == "show":
        closed = f", closed {stamp(doc['closed_at'])}" if doc["closed_at"] else ""
        out.print(f"[bold]audit item {doc['id']}[/]: {doc['model']}, {doc['kind']}, {doc['status']}; opened "
                  f"{stamp(doc['opened_at'])}{closed}")  # fmt: skip
        out.print(f"  why: {_why(doc['details'])}")
        for key, value in doc["details"].items():
            if key not in {"reasons"}:
                out.print(f"  {key.replace('_', ' ')}: {value}")
        if doc.get("actions"):
            out.print(_trail(doc["actions"], "what was done"))
    else:  # ack, resolve
        item, action = doc.get("item") or {}, doc.get("action") or {}
        what = f"audit item {item.get('id', '?')} ({item.get('model', '?')}): {action.get('action', verb)}"
        out.print(f"{what} by {action.get('actor', '?')} at {stamp(action.get('ts'))}; "
                  f"now {item.get('status', '?')}")  # fmt: skip


def _why(details: dict[str, Any]) -> str:
    reasons = details.get("reasons") or {}
    if reasons:
        return ", ".join(f"{k} {v}" for k, v in reasons.items())
    if "age_s" in details:
        return f"the default is {format_duration(float(details['age_s']))} old"
    return "-"


def _trail(actions: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("when", "who", "action", "model", "item", "comment"):
        t.add_column(col)
    for a in actions:
        t.add_row(stamp(a["ts"]), a["actor"], a["action"], a["model"], str(a.get("audit_id") or "-"),
                  a.get("comment") or "")  # fmt: skip
    return t


def _features(args: argparse.Namespace) -> int:
    from failsoft.features import FeatureStore, build_training_set

    store = FeatureStore(args.root)
    try:
        if args.verb == "ingest":
            if not (args.name and args.source and args.entity):
                print("error: ingest needs --name, --source and --entity", file=sys.stderr)
                return 2
            try:
                ttl = parse_duration(args.ttl) if args.ttl else None
            except ValueError as err:
                print(f"error: --ttl {err}", file=sys.stderr)
                return 2
            t = store.ingest(args.name, args.source, entity=args.entity, ttl_s=ttl)
            features = ", ".join(t.features)
            shown = format_duration(ttl) if ttl else "none"
            print(f"{t.name}: entity {', '.join(t.entity)}; features {features}; ttl {shown}")
            return 0
        if args.verb == "status":
            return _features_status(store, args.table or store.names(), args.json)
        if not (args.spine and args.table and args.out):
            print("error: build needs --spine, --table (one or more) and --out", file=sys.stderr)
            return 2
        table = build_training_set(store, args.spine, args.table, out=args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{table.num_rows} rows, {table.num_columns} columns written to {args.out}")
    return 0


def _shadow(args: argparse.Namespace) -> int:
    """shadow report / promote / rollback / history, on the store named by portfolio.toml."""
    import json

    from failsoft.errors import InvalidRequest, PolicyNotMet, PromotionError
    from failsoft.labels import ingest_file
    from failsoft.shadow import deploy

    try:
        spec = config.load(args.portfolio)
        store = open_store(spec.store_url())
        store.connect()
        if args.cmd == "labels":
            n = ingest_file(store, args.file)
            print(json.dumps({"received": n}) if args.json else f"{n} labels saved")
            return 0
        if args.cmd == "shadow":
            doc: Any = deploy.report(store, spec, args.model)
        elif args.cmd == "promote":
            doc = deploy.promote(store, spec, args.model, args.candidate, args.by, args.reason, args.force)
        elif args.cmd == "rollback":
            doc = deploy.rollback(store, spec, args.model, args.by, args.reason, args.force)
        else:
            doc = msgspec.to_builtins(deploy.history(store, args.model))
    except PromotionError as err:
        if args.json:
            failing = err.failing if isinstance(err, PolicyNotMet) else None
            print(json.dumps({"error": str(err), "failing": failing}, indent=2))
        else:
            print(f"refused: {err}", file=sys.stderr)
        return 1
    except (ConfigError, StoreError, InvalidRequest) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    if args.cmd in {"promote", "rollback"}:
        if doc.get("status") == "flipped":
            forced = " (forced)" if doc.get("forced") else ""
            print(f"{args.model}: {doc['action']}{forced} {doc['from']} -> {doc['to']} by {doc['actor']} at "
                  f"{stamp(doc['ts'])}; every replica applies it")  # fmt: skip
        elif doc.get("status") == "pending_approval":
            print(f"{args.model}: promoting {doc['candidate']} waits for approval: audit item "
                  f"{doc['audit_id']} (failsoft audits show {doc['audit_id']})")  # fmt: skip
        else:
            print(f"{args.model}: {doc.get('status', doc)}")
        return 0
    _print_shadow(args.cmd, doc)
    return 0


def _print_shadow(cmd: str, doc: Any) -> None:
    from rich.table import Table

    out = console()
    if cmd == "history":
        t = Table("#", "when", "action", "from", "to", "who", "forced", "why")
        for f in doc:
            t.add_row(str(f["id"]), stamp(f["ts"]), f["action"], f["from"], f["to"], f["actor"],
                      "yes" if f["forced"] else "", f["reason"])  # fmt: skip
        out.print(t)
        return
    out.print(f"[bold]{doc['model']}[/]: live primary [bold]{doc['live']}[/]")
    for c in doc["candidates"]:
        m = c["metric"]
        out.print(
            f"\n[bold]{c['candidate']}[/]: {c['logged']} copies answered or failed "
            f"({c['mirrored']} mirrored, {c['dropped']} dropped), {c['errors']} errors, "
            f"{c['timeouts']} timeouts; latency p50 {c['latency_ms']['p50']} ms, "
            f"p99 {c['latency_ms']['p99']} ms; "
            f"agreement {c['agreement'] if c['agreement'] is None else round(c['agreement'], 4)}; "
            f"{c['labelled_pairs']} labelled pairs"
        )
        if "live" in m:
            out.print(
                f"  {m['name']}: live {m['live']:.4f}, candidate {m['candidate']:.4f}, "
                f"difference {m['difference']:+.4f} (95% CI {m['ci95'][0]:+.4f} .. {m['ci95'][1]:+.4f}, "
                f"{m['method']})"
            )
        t = Table("rule", "passed", "value", "threshold", "detail")
        for r in c["verdict"]["rules"]:
            mark = "[green]yes[/]" if r["passed"] else "[red]no[/]"
            t.add_row(r["rule"], mark, str(r["value"]), str(r["threshold"]), r["detail"])
        out.print(t)
        verdict = "[green]may be promoted[/]" if c["verdict"]["passed"] else "[red]not proven[/]"
        out.print(f"  verdict: {verdict}")


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
    import html
    import json

    from failsoft.features import FeatureStore
    from failsoft.features.leakage import audit

    try:
        report = audit(FeatureStore(args.root), args.spine, args.table, args.label, args.split)
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
            color = {"ok": "green", "suspicious": "yellow", "leak": "red"}[f["verdict"]]
            t.add_row(f["table"], f["feature"], f"[{color}]{f['verdict']}[/]", f["reason"])
        console().print(t)
        print(", ".join(f"{v} {k}" for k, v in report["summary"].items()))
    if args.html:
        rows = "".join(
            f"<tr><td>{html.escape(f['table'])}</td><td>{html.escape(f['feature'])}</td>"
            f"<td>{f['verdict']}</td><td>{html.escape(f['reason'])}</td></tr>"
            for f in report["features"]
        )
        Path(args.html).write_text(
            f"<!doctype html><meta charset=utf-8><title>failsoft leakage audit</title>"
            f"<table border=1><tr><th>table<th>feature<th>verdict<th>reason</tr>{rows}</table>"
        )
    return 1 if report["summary"]["leak"] else 0


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
    _add_gateway_options(h)
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

    a = sub.add_parser(
        "audits",
        help="the audit queue of a running gateway: list, show, ack, resolve, log; webhook-secret prints a "
        "new secret to sign webhook deliveries with",
    )
    a.add_argument("verb", choices=["list", "show", "ack", "resolve", "log", "webhook-secret"])
    a.add_argument("id", nargs="?", type=int, help="the audit item (show, ack, resolve)")
    a.add_argument(
        "--action",
        choices=["approve_default", "refresh_default", "replace_default", "restore", "keep_out", "comment"],
    )
    a.add_argument("--value", help='replace_default: the new default, as JSON (e.g. \'["a", "b"]\' or 0.2)')
    a.add_argument("--for", dest="for_s", help="keep_out: how long, e.g. 30m, 2h, 1d")
    a.add_argument("--comment", default="")
    a.add_argument("--status", default=None, help="list: open, acknowledged, resolved or unresolved")
    a.add_argument("--model", default=None)
    _add_gateway_options(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=_audits)

    f = sub.add_parser("features", help="the point-in-time feature store: ingest tables, build training sets")
    f.add_argument("verb", choices=["ingest", "build", "status"])
    f.add_argument("--root", default="failsoft-data/features", help="where feature tables are kept")
    f.add_argument("--name", help="ingest: the table's name")
    f.add_argument("--source", help="ingest: a .parquet or .csv file")
    f.add_argument("--entity", action="append", default=[], help="ingest: an entity key column (repeatable)")
    f.add_argument("--ttl", default=None, help="ingest: values older than this are not used, e.g. 30d")
    f.add_argument("--spine", help="build: .parquet/.csv with the entity keys and prediction_time")
    f.add_argument("--table", action="append", default=[], help="build, status: a feature table (repeatable)")
    f.add_argument("--json", action="store_true", help="status: as JSON")
    f.add_argument("--out", help="build: the training set to write (.parquet or .csv)")
    f.add_argument("--quiet", action="store_true", help="no progress line")
    f.set_defaults(fn=_features, progress=True)

    by = os.environ.get("USER", "cli")
    sh = sub.add_parser("shadow", help="shadow candidates: the report, rule by rule")
    sh.add_argument("verb", choices=["report"])
    sh.add_argument("model")
    pr = sub.add_parser(
        "promote", help="make a proven candidate the primary (the old one becomes a candidate)"
    )
    pr.add_argument("model")
    pr.add_argument("candidate")
    pr.add_argument("--force", action="store_true", help="promote although the policy fails (needs --reason)")
    rb = sub.add_parser("rollback", help="flip a model back to its previous primary")
    rb.add_argument("model")
    rb.add_argument("--force", action="store_true", help="roll back a rollback (re-promotes, unchecked)")
    hi = sub.add_parser("history", help="every promotion and rollback of a model: who, when, why, evidence")
    hi.add_argument("model")
    lb = sub.add_parser("labels", help="delayed ground truth, joined to logged predictions by request id")
    lb.add_argument("verb", choices=["ingest"])
    lb.add_argument("file", help=".csv, .parquet or .jsonl with columns id, label and optionally time")
    lb.add_argument("--quiet", action="store_true", help="no progress line")
    lb.set_defaults(progress=True)
    for cmd, q in (("shadow", sh), ("promote", pr), ("rollback", rb), ("history", hi), ("labels", lb)):
        q.add_argument("--portfolio", default="portfolio.toml")
        q.add_argument("--json", action="store_true")
        if cmd in {"promote", "rollback"}:
            q.add_argument("--reason", default="", help="why (recorded)")
            q.add_argument("--by", default=by, help="who flips it (recorded)")
        q.set_defaults(fn=_shadow, cmd=cmd)

    lk = sub.add_parser("leakage", help="audit training data for label leakage (exit code 1 on a leak)")
    lk.add_argument("verb", choices=["audit"])
    lk.add_argument("--root", default="failsoft-data/features", help="where feature tables are kept")
    lk.add_argument("--spine", required=True, help=".parquet/.csv: entity keys, prediction_time, the label")
    lk.add_argument("--table", action="append", default=[], required=True)
    lk.add_argument("--label", required=True)
    lk.add_argument("--split", default=None, help="a column saying train or test")
    lk.add_argument("--json", action="store_true")
    lk.add_argument("--html", default=None, help="also write the report as an HTML page")
    lk.add_argument("--quiet", action="store_true", help="no progress line")
    lk.set_defaults(fn=_leakage, progress=True)

    from failsoft.monitor.commands import add_commands

    add_commands(sub)

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
