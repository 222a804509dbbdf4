"""Does the suite hold on a loaded machine? A clean clone of HEAD, the README's test command run N times in a
row while CPU hogs (busy-looping processes) take cores beside it; prints each run and exits 1 when any run
failed.

    python bench/flake.py                    # 5 runs, 1 hog, this virtualenv
    python bench/flake.py --runs 3 --hogs 2  # heavier load
    python bench/flake.py --fresh-venv       # also a fresh virtualenv, as CI does (adds the install time)

The clone is made from the committed HEAD (uncommitted changes are not tested); its own code is imported
(PYTHONPATH), so this virtualenv's editable install does not shadow it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside the suite")
    ap.add_argument("--fresh-venv", action="store_true", help="install into a fresh virtualenv first")
    ap.add_argument("--pytest-args", default="-q", help="arguments for pytest (default -q)")
    ap.add_argument("--run-timeout", type=float, default=1800, help="a run past this many seconds is a hang")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="failsoft-flake-"))
    clone = work / "failsoft"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    python = sys.executable
    if args.fresh_venv:
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
        python = str(work / "venv" / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{clone}[test]"], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone), "CI": "1"}
    print(f"clone of {head} in {clone}; {args.hogs} CPU hog(s) on {os.cpu_count()} cores; {args.runs} runs")

    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    results = []
    try:
        for i in range(1, args.runs + 1):
            started = time.monotonic()
            cmd = [python, "-m", "pytest", *args.pytest_args.split(), "-p", "no:cacheprovider"]
            try:
                done = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True,
                                      timeout=args.run_timeout)  # fmt: skip
            except subprocess.TimeoutExpired as err:
                out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
                hung = f"\nHUNG: no end after {args.run_timeout:.0f} s"
                done = subprocess.CompletedProcess(cmd, 124, out + hung, "")
            took = time.monotonic() - started
            tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
            load = os.getloadavg()[0]
            results.append((done.returncode, took, tail, failed))
            status = "green" if done.returncode == 0 else "RED"
            print(f"run {i}: {status} in {took:.0f} s, load {load:.1f}: {tail}", flush=True)
            for test in failed:
                print(f"    {test}")
            if done.returncode != 0:
                (work / f"run{i}.log").write_text(done.stdout + done.stderr)
                print(f"    output: {work / f'run{i}.log'}")
    finally:
        for h in hogs:
            h.kill()
    red = sum(1 for code, *_ in results if code != 0)
    print(f"{len(results) - red} of {len(results)} runs green (commit {head}, {args.hogs} hog(s))")
    return 1 if red else 0


if __name__ == "__main__":
    sys.exit(main())
