"""The PHP client and the WordPress plugin, measured here in one run.

(a) The PHP client's added time over a bare curl call to the same gateway: calls alternate one by one in one
    PHP process (p50 and p99 of each; goal: <= 0.3 ms added at p50).
(b) Time to the gateway's safe default kept on the site, with the gateway refusing connections (goal:
    <= 10 ms) and hung (accepting and never answering; goal: the deadline + 50 ms at most).
(c) A WordPress page with the [failsoft] shortcode (Debian's WordPress, MariaDB, php -S), gateway up vs
    gateway killed, p50 page time side by side.

Needs php-cli, php-curl, MariaDB and Debian's wordpress (.ci/php installs them).

    python bench/php_client.py [--calls 2000] [--pages 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from failsoft.demo.procs import free_port  # noqa: E402
from tests import misbehaving  # noqa: E402
from tests.php.conftest import start_gateway  # noqa: E402
from tests.php.wordpress import Site  # noqa: E402


def pages(url: str, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
        times.append((time.perf_counter() - t) * 1000)
    assert b"failsoft-list" in body
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p90_ms": round(times[int(0.9 * (n - 1))], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="failsoft-bench-php-") as tmp:
        folder = Path(tmp)
        gateway = start_gateway(folder / "gateway")
        try:
            with misbehaving.hanging() as hung:
                cmd = ["php", str(HERE / "php" / "client.php"), gateway.url, f"http://127.0.0.1:{free_port()}",
                       hung, str(args.calls)]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            client = json.loads(done.stdout.strip().splitlines()[-1])
            print("PHP client vs bare curl:", json.dumps(client, indent=1))
            site = Site(
                folder / "wordpress", gateway.url, '[failsoft model="recs" user_id="7"]', deadline_s=1.0
            )
            site.start()
            try:
                pages(site.url + "/for-you/", 10)  # warm
                up = pages(site.url + "/for-you/", args.pages)
                gateway.kill()
                pages(site.url + "/for-you/", 3)
                down = pages(site.url + "/for-you/", args.pages)
            finally:
                site.close()
        finally:
            gateway.stop()
    wordpress = {
        "gateway_up": up,
        "gateway_down": down,
        "down_over_up_p50": round(down["p50_ms"] / up["p50_ms"], 3),
    }
    print("WordPress page with the shortcode:", json.dumps(wordpress, indent=1))
    print(json.dumps({"php_client": client, "wordpress": wordpress}))


if __name__ == "__main__":
    main()
