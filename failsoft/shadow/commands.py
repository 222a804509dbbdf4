"""``failsoft shadow``, ``promote``, ``rollback``, ``history`` and ``labels``: shadow candidates and their
flips, on the store the portfolio names (the command line works with or without a running gateway)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from failsoft import config, env
from failsoft.errors import ConfigError
from failsoft.store import StoreError, open_store
from failsoft.terminal import console, stamp


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
            doc: Any = msgspec.to_builtins(deploy.report(store, spec, args.model))
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


def add_commands(sub: Any) -> None:
    by = env.user()
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
