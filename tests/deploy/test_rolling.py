"""A rolling update on this machine, end to end: three replicas on PostgreSQL behind HAProxy, clients
posting through it on keep-alive connections, the replicas replaced one at a time (SIGTERM, drained, a new
one started and ready, the next): no answer other than 200, nothing answered missing from the log, no
request broken, p99 within the deadline plus a bound. Then one replica killed with kill -9: HAProxy's
retry policy (retry-on conn-failure empty-response response-timeout, redispatch) answers the requests it
had in flight elsewhere; the log keeps every answer the clients got."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.fleet import DEADLINE_MS, Fleet

# the p99 bound over the deadline, for a 2-core machine running three replicas, HAProxy, PostgreSQL and
# the clients at once (bench/rolling.py measures it)
P99_BOUND_MS = 400


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    if shutil.which("haproxy") is None:
        why = "haproxy is not installed (Debian's haproxy; .ci/deploy installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    fleet = Fleet(tmp_path, pg_url).start()
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.mark.timing
def test_a_rolling_update_and_a_kill_drop_nothing(fleet: Fleet) -> None:
    fleet.start_clients()
    time.sleep(2)
    roll_start = time.monotonic()
    drains = [fleet.replace(i) for i in range(3)]
    roll_end = time.monotonic()
    time.sleep(1)
    tally = fleet.tally
    with tally.lock:
        rolled_ok, rolled_broken, rolled_non_2xx = len(tally.ok), list(tally.broken), dict(tally.non_2xx)
    assert rolled_non_2xx == {} and rolled_broken == [], (rolled_non_2xx, rolled_broken[:5], fleet.events)
    assert rolled_ok > 300, "the clients were busy throughout"
    assert all(d < 15 for d in drains), drains  # a drain of 1.5 s and a graceful stop
    p99 = tally.p99(roll_start, roll_end)
    assert p99 < DEADLINE_MS + P99_BOUND_MS, p99

    fleet.kill(1)
    time.sleep(1.5)
    fleet.stop()  # every replica drains and flushes its log
    assert tally.non_2xx == {}, tally.non_2xx
    assert len(tally.broken) <= 4, tally.broken  # at most the clients' requests in flight on the killed one
    logged = fleet.logged_ids()
    missing = set(tally.ok) - set(logged)
    assert not missing, f"{len(missing)} answered requests are not in the log, e.g. {sorted(missing)[:5]}"
