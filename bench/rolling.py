"""A rolling update and a kill -9 under load, measured: three replicas of `failsoft serve` on PostgreSQL
behind HAProxy (health checks on /v2/health/ready every 200 ms), four clients posting through it on
keep-alive connections, the replicas replaced one at a time, then one killed with kill -9.

Prints: answers, non-2xx, requests with no answer at all, answered requests missing from the log, p99
while steady vs during the roll vs after the kill, and how long each replica took to drain and stop. The
last line is one JSON object.

    python bench/rolling.py [--steady 5] [--clients 4] [--drain 1.5]
    (--drain 0: the stop without a drain; --no-retry: a balancer that retries nothing, as kube-proxy)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import psycopg  # noqa: E402

from tests.deploy.fleet import DEADLINE_MS, DRAIN_S, Fleet  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steady", type=float, default=5.0, help="seconds of load before the roll")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--no-retry", action="store_true", help="HAProxy retries nothing (as kube-proxy)")
    ap.add_argument(
        "--drain", type=float, default=DRAIN_S, help="[server] drain_s (0: stop at once, the baseline)"
    )
    args = ap.parse_args()
    name = f"failsoft_bench_roll_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="failsoft-bench-roll-") as tmp:
            fleet = Fleet(
                Path(tmp), ADMIN.rsplit("/", 1)[0] + f"/{name}", drain_s=args.drain, retry=not args.no_retry
            ).start()
            try:
                fleet.start_clients(args.clients)
                t0 = time.monotonic()
                time.sleep(args.steady)
                t1 = time.monotonic()
                drains = [round(fleet.replace(i), 2) for i in range(3)]
                t2 = time.monotonic()
                time.sleep(2)
                with fleet.tally.lock:
                    broken_by_roll = len(fleet.tally.broken)
                    non_2xx_by_roll = sum(fleet.tally.non_2xx.values())
                t3 = time.monotonic()
                fleet.kill(1)
                time.sleep(3)
                t4 = time.monotonic()
            finally:
                fleet.stop()
            tally = fleet.tally
            logged = fleet.logged_ids()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    out = {
        "replicas": 3,
        "clients": args.clients,
        "deadline_ms": DEADLINE_MS,
        "drain_s": args.drain,
        "balancer_retries": not args.no_retry,
        "answered": len(tally.ok),
        "non_2xx_during_roll": non_2xx_by_roll,
        "non_2xx_after_kill9": sum(tally.non_2xx.values()) - non_2xx_by_roll,
        "no_answer_during_roll": broken_by_roll,
        "no_answer_after_kill9": len(tally.broken) - broken_by_roll,
        "log_rows": len(logged),
        "answered_missing_from_log": len(set(tally.ok) - set(logged)),
        "p99_steady_ms": tally.p99(t0, t1),
        "p99_roll_ms": tally.p99(t1, t2),
        "p99_kill9_ms": tally.p99(t3, t4),
        "seconds_to_drain_and_stop": drains,
        "roll_s": round(t2 - t1, 1),
    }
    for k, v in out.items():
        print(f"{k:>28}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
