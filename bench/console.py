"""How fast the console draws a big portfolio: a gateway serving ``--models`` models (an in-process model
and a default each) with traffic on all of them, the console opened in Debian's chromium (Playwright given
its path), timed from navigation start until the table is drawn (every model's row, or the first 200,
problems first, past 200 models), then the time a person takes to find one model by typing its name
into the find box (until its row is the only one); and what one ``/v1/console`` document costs the
gateway (its size and the time to answer it, over loopback). Prints one JSON line.

    python bench/console.py [--models 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from failsoft.demo.procs import Proc  # noqa: E402
from tests.portfolios import default_tier, model, python_tier, write  # noqa: E402

MAX_ROWS = 200  # failsoft/server/static/console.js's MAX_ROWS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="failsoft-console-"))
    models = {f"m{i:04d}": model(python_tier("cpu", "tests.helpers:score"), default_tier(0.5))
              for i in range(args.models)}  # fmt: skip
    path = write(tmp, models)
    gw = Proc([sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning"],
              "/v2/health/ready", tmp / "gw.log").start()  # fmt: skip
    try:
        for name in models:  # every model has answers, so every row has lines to draw
            for x in (1, 5, 9):
                body = json.dumps({"inputs": {"x": x}}).encode()
                req = urllib.request.Request(f"{gw.url}/v1/models/{name}/predict", body,
                                             {"Content-Type": "application/json"})  # fmt: skip
                urllib.request.urlopen(req, timeout=10).read()
        took, size = [], 0
        for _ in range(20):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{gw.url}/v1/console", timeout=10) as r:
                size = len(r.read())
            took.append((time.perf_counter() - t0) * 1000)
        draws, finds = [], []
        shown = min(args.models, MAX_ROWS)  # the console draws the first 200 (problems first)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            for _ in range(5):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(gw.url + "/")
                drawn = f"document.querySelectorAll('#models tbody tr').length === {shown}"
                page.wait_for_function(drawn)
                draws.append(page.evaluate("performance.now()"))
                # a person finds one model: typed into the find box, until its row is the only one
                t0 = page.evaluate("performance.now()")
                page.fill("#find", list(models)[-1])
                page.wait_for_function("document.querySelectorAll('#models tbody tr').length === 1")
                finds.append(page.evaluate("performance.now()") - t0)
                page.close()
            browser.close()
    finally:
        gw.stop()
    out = {
        "models": args.models,
        "console_json_bytes": size,
        "console_json_ms_median": round(statistics.median(took), 2),
        "rows_drawn": shown,
        "first_draw_ms": [round(d) for d in draws],
        "first_draw_ms_median": round(statistics.median(draws)),
        "find_one_ms_median": round(statistics.median(finds), 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
