"""The fuzz suite (tests/server/test_fuzz.py) on a longer budget than CI's: every endpoint, both OIP body
encodings, the control plane; no 5xx, no hang, the JSON error shape on every 4xx, one log row per answer.

    python bench/fuzz.py [--examples 20000]      (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=20_000)
    args = ap.parse_args()
    env = {**os.environ, "FAILSOFT_FUZZ_EXAMPLES": str(args.examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/server/test_fuzz.py"]
    raise SystemExit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
