"""The ``failsoft`` command: serve, check, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from failsoft import config
from failsoft.errors import ConfigError


def _check(args: argparse.Namespace) -> int:
    from failsoft.portfolio import Portfolio

    try:
        spec = config.load(args.portfolio)
        if args.load:

            async def load() -> None:
                portfolio = Portfolio(spec)
                await portfolio.start()
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
    print(f"{args.portfolio}: ok")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from failsoft.portfolio import Portfolio
    from failsoft.server.run import serve

    try:
        portfolio = Portfolio(config.load(args.portfolio))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    serve(portfolio, args.host, args.port, args.log_level)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from failsoft.demo.run import run_demo

    return run_demo(
        duration=args.duration,
        port=args.port,
        data_dir=args.data_dir,
        faults=not args.no_faults,
        as_json=args.json,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="failsoft", description="Every prediction answered within its deadline.")
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

    d = sub.add_parser("demo", help="train small models, start a backend and the gateway, inject faults")
    d.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    d.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    d.add_argument("--data-dir", default="failsoft-demo", help="where models, data and logs go")
    d.add_argument("--no-faults", action="store_true", help="run healthy traffic only")
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object, last line")
    d.set_defaults(fn=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
