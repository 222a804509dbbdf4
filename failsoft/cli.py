"""The ``failsoft`` command: the verbs live beside their packages (each has ``add_commands``); this module
assembles them and runs one."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from failsoft.terminal import working


def parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    from failsoft.audit import commands as audit_commands
    from failsoft.demo import commands as demo_commands
    from failsoft.features import commands as feature_commands
    from failsoft.monitor import commands as monitor_commands
    from failsoft.server import commands as server_commands
    from failsoft.shadow import commands as shadow_commands
    from failsoft.store import commands as store_commands

    p = argparse.ArgumentParser(prog="failsoft", description="Every prediction answered within its deadline.")
    p.add_argument("--version", action="version", version=f"failsoft {version('failsoft')}")
    p.set_defaults(progress=False)  # long offline commands set it: a progress line on a terminal
    sub = p.add_subparsers(dest="command", required=True)
    verbs = (server_commands, store_commands, audit_commands, feature_commands, shadow_commands,
             monitor_commands, demo_commands)  # fmt: skip
    for package in verbs:
        package.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with working(f"failsoft {args.command}", getattr(args, "quiet", False) or not args.progress):
            code: int = args.fn(args)
    except KeyboardInterrupt:
        # Ctrl-C (or SIGINT to the process group): a server raises it again after its clean stop, as
        # uvicorn does, so the shell sees how it ended; the conventional status, without a traceback
        return 130
    except BrokenPipeError:
        # the reader went away (`failsoft history --json | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
