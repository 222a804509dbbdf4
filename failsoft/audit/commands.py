"""``failsoft audits``: the audit queue of a running gateway, from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from failsoft import control_client
from failsoft.durations import format_duration, parse_duration
from failsoft.terminal import console, stamp


def _audits(args: argparse.Namespace) -> int:
    import json

    if args.verb == "webhook-secret":
        from failsoft.audit.notify import new_secret

        print(new_secret())
        return 0
    base = "/v1/audits"
    if args.verb in {"show", "ack", "resolve"} and args.id is None:
        print(f"error: audits {args.verb} needs an item id (audits list shows them)", file=sys.stderr)
        return 2
    misplaced = [flag for flag, given in (("--action", args.action), ("--value", args.value),
                                          ("--for", args.for_s)) if given is not None]  # fmt: skip
    if misplaced and args.verb != "resolve":
        print(f"error: {' and '.join(misplaced)} go with resolve: failsoft audits resolve ID --action "
              "ACTION", file=sys.stderr)  # fmt: skip
        return 2
    try:
        if args.verb == "list":
            params = {k: v for k, v in {"status": args.status, "model": args.model}.items() if v}
            doc = control_client.call(args, "GET", base, params=params, timeout_s=10)
        elif args.verb == "log":
            params = {"model": args.model} if args.model else {}
            doc = control_client.call(args, "GET", f"{base}/log", params=params)
        elif args.verb == "show":
            doc = control_client.call(args, "GET", f"{base}/{args.id}", timeout_s=10)
        else:
            body: dict[str, object] = {"comment": args.comment}
            if args.verb == "resolve":
                if args.action is None:
                    print(f"error: resolve needs --action: {', '.join(RESOLVE_ACTIONS)}", file=sys.stderr)
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
                        body["for_s"] = parse_duration(" ".join(args.for_s))
                    except ValueError as err:
                        print(f"error: --for {err}", file=sys.stderr)
                        return 2
            verb = "ack" if args.verb == "ack" else "resolve"
            doc = control_client.call(args, "POST", f"{base}/{args.id}/{verb}", body)
    except control_client.Refused as err:
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


# audit/actions.py's ACTIONS but ack (a verb of its own); a test holds them equal
RESOLVE_ACTIONS = ("approve_default", "refresh_default", "replace_default", "restore", "keep_out", "comment",
                   "approve_promotion", "reject_promotion")  # fmt: skip
VERBS = """verbs:
  list              the items (--status open|acknowledged|resolved|unresolved, --model M)
  show ID           one item: why it opened, the safe default it served, what was done
  ack ID            say someone is looking (--comment)
  resolve ID        close it with --action (below), and --comment
  log               what people did, newest first (--model M)
  webhook-secret    print a new secret to sign webhook deliveries with (no gateway needed)

resolve's actions (--action):
  approve_default   the safe default is fine as it is (its age starts again)
  refresh_default   compute the safe default again from its source (a Top-N from events)
  replace_default   serve --value (JSON) as the safe default
  restore           put the model back live (its breakers reset)
  keep_out          keep the model on its fallbacks --for a span (e.g. 2h, or 2 hours)
  comment           add a comment, change nothing
  approve_promotion, reject_promotion
                    a promotion waiting for a person (an item of kind approval)

examples:
  failsoft audits list
  failsoft audits resolve 3 --action keep_out --for 2h --comment "retraining"
  failsoft audits resolve 3 --action replace_default --value '["a", "b"]'"""


def add_commands(sub: Any) -> None:
    a = sub.add_parser(
        "audits",
        help="the audit queue of a running gateway: list, show, ack, resolve, log; webhook-secret prints a "
        "new secret to sign webhook deliveries with",
        description="The audit queue of a running gateway: items open when a model has served fallbacks "
        "too long or its safe default is old; a person looks and resolves them.",
        epilog=VERBS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = ["list", "show", "ack", "resolve", "log", "webhook-secret"]
    a.add_argument("verb", choices=verbs, help="see below")
    a.add_argument("id", nargs="?", type=int, help="the audit item (show, ack, resolve)")
    r = a.add_argument_group("resolve only")
    r.add_argument("--action", choices=RESOLVE_ACTIONS, help="what to do (see below)")
    r.add_argument("--value", help='replace_default: the new default, as JSON (e.g. \'["a", "b"]\' or 0.2)')
    r.add_argument("--for", dest="for_s", nargs="+", metavar="SPAN",
                   help='keep_out: how long, e.g. 30m, 2h, 1d or 2 hours')  # fmt: skip
    a.add_argument("--comment", default="", help="recorded with the action (ack, resolve)")
    a.add_argument("--status", default=None, help="list: open, acknowledged, resolved or unresolved")
    a.add_argument("--model", default=None, help="list, log: one model's items")
    control_client.add_options(a)
    a.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    a.set_defaults(fn=_audits)
