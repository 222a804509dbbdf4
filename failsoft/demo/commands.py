"""``failsoft demo``: the bundled portfolio under traffic and faults."""

from __future__ import annotations

import argparse
from typing import Any


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


def add_commands(sub: Any) -> None:
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
