"""The operator's console in a real browser (Debian's chromium, driven by Playwright's Python package given
its path) against a real gateway while faults run: a quarantine shows with its reason, an audit item is
acknowledged and resolved from the page with a token (and refused without a good one), a shadow verdict
is visible. Screenshots go to ``$FAILSOFT_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from failsoft.chain import Answer
from failsoft.demo.procs import Proc, free_port
from failsoft.server.console import BUCKET_S, BUCKETS, MIN_SPAN, Recent
from failsoft.types import Outcome
from tests.browser import shot as browser_shot
from tests.http import get, post
from tests.portfolios import default_tier, model, oip_tier, python_tier, write

ALICE = "alice-token-0123456789abcdef"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def answer(model: str, tier: str, latency_ms: float, degraded: bool = False) -> Answer:
    outcome = Outcome("r", model, "1", tier, degraded, None, 0.5, latency_ms)
    return Answer(outcome, [0.5], [{}], None, None, ())


def test_recent_history_in_five_second_buckets() -> None:
    clock = Clock(1000.0)
    recent = Recent(["m"], clock)
    for i in range(100):
        recent.observe(answer("m", "heavy", float(i)))
    clock.t = 1007.0  # the next bucket
    for _ in range(30):
        recent.observe(answer("m", "default", 50.0, degraded=True))
    recent.observe(answer("other", "x", 1.0))  # a model it does not know: ignored
    s = recent.series("m")
    assert len(s["n"]) == MIN_SPAN and s["t0"] == 1005.0 - BUCKET_S * (MIN_SPAN - 1)
    assert s["n"][-2:] == [100, 30] and s["degraded"][-2:] == [0, 30]
    assert s["tiers"] == {"heavy": [0] * (MIN_SPAN - 2) + [100, 0], "default": [0] * (MIN_SPAN - 1) + [30]}
    assert s["p50"][-2] == 50.0 and s["p99"][-2] == 99.0 and s["p50"][0] is None
    w = recent.window("m")
    assert w["answered"] == 130 and w["degraded_share"] == round(30 / 130, 4) and w["p99"] == 98.0
    clock.t = 1000.0 + BUCKET_S * (BUCKETS + 40)  # long after: the span is at most ten minutes
    assert len(recent.series("m")["n"]) == BUCKETS
    assert recent.window("m")["answered"] == 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """``bad``: its engine is not there (it serves its default, and an audit item opens after 1 s);
    ``good``: an in-process model with a shadow candidate."""
    tmp = tmp_path_factory.mktemp("console")
    down = oip_tier("engine", f"http://127.0.0.1:{free_port()}", "bad", breaker={"window": 4, "min_calls": 2})
    models = {
        "bad": model(down, default_tier(["a", "b"]), inputs=(), output={"type": "list"}, deadline_ms=50),
        "good": model(python_tier("cpu", "tests.helpers:score"), default_tier(0.5), deadline_ms=50,
                      candidates=(python_tier("next", "tests.helpers:score4"),),
                      inputs=({"name": "x", "min": 0, "max": 10},),
                      monitor={"learn_rows": 60, "window_rows": 60, "action": "warn"}),
    }  # fmt: skip
    path = write(tmp, models, audit={"after_s": 1.0, "window_s": 1.0, "min_answers": 1})
    (tmp / "tokens.toml").write_text(f'alice = "{ALICE}"\n')
    os.environ["FAILSOFT_TOKENS_FILE"] = str(tmp / "tokens.toml")
    try:
        cmd = [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning"]
        gw = Proc(cmd, "/v2/health/ready", tmp / "gw.log").start()
    finally:
        del os.environ["FAILSOFT_TOKENS_FILE"]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            post(f"{gw.url}/v1/models/bad/predict", {"inputs": {}})
            post(f"{gw.url}/v1/models/good/predict", {"inputs": {"x": random.uniform(0, 10)}})
            time.sleep(0.02)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    yield gw
    stop.set()
    thread.join()
    gw.stop()


def shot(page: Any, name: str) -> None:
    browser_shot(page, f"console-{name}")


def page_showing(browser: Any, gateway: Proc, doc: Any) -> Any:
    """The console, every ``/v1/console`` it asks for answered with ``doc``."""
    body = json.dumps(doc)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.route(
        "**/v1/console", lambda route: route.fulfill(status=200, content_type="application/json", body=body)
    )
    page.goto(gateway.url + "/")
    return page


def test_quarantine_audit_and_shadow_from_the_page(gateway: Proc, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # nothing on the page fails in the browser's console, not even a missing icon
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(gateway.url + "/")
    good = page.locator("#models tr[data-model=good]")
    expect(good).to_contain_text("live", timeout=10_000)
    reason = "tenure drifted (PSI 0.31)"
    assert post(f"{gateway.url}/v1/models/good/health", {"health": "quarantined", "reason": reason},
                {"Authorization": f"Bearer {ALICE}"}).status_code == 200  # fmt: skip
    expect(good).to_contain_text("quarantined", timeout=6_000)
    expect(good).to_contain_text(reason)
    rows = page.locator("#models tbody tr")
    assert rows.first.get_attribute("data-model") == "good", "problems sorted first"
    # the header says what the rows say: "bad" is live but answered by its default
    expect(page.locator("#models tr[data-model=bad]")).to_contain_text("live · serving fallbacks")
    status = page.locator("#status")
    expect(status).to_contain_text("2 models · 1 not live · 1 live but serving fallbacks", timeout=6_000)
    expect(status).to_contain_text(re.compile(r"(\d+ audit items?|no audit items)"))
    assert not re.search(r"\b1 (models|audit items)\b", status.inner_text()), status.inner_text()

    card = page.locator("#audits article").filter(has_text="bad · fallback")
    expect(card).to_contain_text("open", timeout=10_000)
    expect(card.locator("button.ack")).to_be_disabled()  # read-only without a token
    shadow = page.locator("[data-candidate='good/next']")
    expect(shadow).to_contain_text("not proven yet", timeout=10_000)
    expect(shadow.locator("li").first).to_be_visible()
    shot(page, "1280x800")

    # a wrong token is said at once (the page asks /v1/whoami), and nothing is enabled by it
    page.fill("#token", "not-a-valid-token-xxxxxx")
    page.press("#token", "Enter")
    expect(page.locator("#who")).to_have_text("not signed in: that token is not valid on this gateway")
    expect(card.locator("button.ack")).to_be_disabled()
    assert page.locator("#signout").is_hidden()

    page.fill("#token", ALICE)
    page.press("#token", "Enter")
    expect(page.locator("#who")).to_have_text("signed in as alice")
    expect(page.locator("#audit-note")).to_contain_text("Signed in as alice")
    # the form shows the fields of the action chosen, no others
    assert card.locator("input[name=value]").is_hidden() and card.locator("input[name=for]").is_hidden()
    card.locator("select[name=action]").select_option("keep_out")
    expect(card.locator("input[name=for]")).to_be_visible()
    assert card.locator("input[name=value]").is_hidden()
    card.locator("button.ack").click()
    expect(card).to_contain_text("acknowledged", timeout=5_000)
    expect(card).to_contain_text('safe default now: ["a","b"] · as written in the portfolio file')
    card.locator("select[name=action]").select_option("replace_default")
    assert card.locator("input[name=for]").is_hidden()
    card.locator("input[name=value]").fill('["z"]')
    card.locator("input[name=comment]").fill("a fresher list until the engine is back")
    card.locator("button.resolve").click()
    expect(page.locator("#audits")).not_to_contain_text("bad · fallback", timeout=5_000)
    expect(page.locator("#trail")).to_contain_text("alice replace_default on bad", timeout=5_000)
    assert post(f"{gateway.url}/v1/models/bad/predict", {"inputs": {}}).json()["outputs"] == ["z"]
    shot(page, "after-audit")

    # the model's page: its chain, latency against the deadline, drift windows, shadows, health events
    page.click("#models a[href='#/models/good']")
    view = page.locator("#model-view")
    expect(view).to_contain_text("The chain", timeout=5_000)
    expect(view.locator("table").first).to_contain_text("cpu")
    expect(view).to_contain_text("within the 50 ms deadline")
    expect(view.locator("button.feature[data-feature=x]")).to_be_visible(timeout=15_000)
    expect(view).to_contain_text("x: reference against window")
    expect(view.locator("[data-candidate='good/next']")).to_contain_text("not proven yet")
    expect(view).to_contain_text(f"health quarantined by alice: {reason}")
    assert page.locator("#portfolio").is_hidden()
    shot(page, "model-page")
    page.click("#model-view a[href='#']")
    expect(page.locator("#portfolio")).to_be_visible()

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(gateway.url + "/")
    expect(phone.locator("#models tr[data-model=good]")).to_contain_text("quarantined", timeout=6_000)
    phone.keyboard.press("Tab")
    assert phone.evaluate("document.activeElement.id") == "token", "the first stop is the sign-in"
    assert "token" not in phone.url
    shot(phone, "phone")
    # the one refusal is the wrong token's, asked about on purpose above
    refused = [e for e in errors if "/v1/whoami" in e or "status of 401" in e]
    assert len(refused) == 2 and errors == refused, errors


def test_a_young_gateway_shows_no_trend_yet(gateway: Proc, browser: Any) -> None:
    """With answers in fewer than three buckets a trend would be a dot: the cell says when it will show."""
    from playwright.sync_api import expect

    doc = get(f"{gateway.url}/v1/console").json()
    for m in doc["models"]:
        quiet = len(m["series"]["n"]) - 1  # every bucket empty but the last
        last = m["chain"][-1]["name"]
        m["series"] = {**m["series"], "n": [0] * quiet + [7], "degraded": [0] * quiet + [7],
                       "p99": [None] * quiet + [3.0], "tiers": {last: [0] * quiet + [7]}}  # fmt: skip

    page = page_showing(browser, gateway, doc)
    row = page.locator("#models tr[data-model=good]")
    expect(row).to_contain_text("trend after 15 s of answers", timeout=6_000)
    assert row.locator("svg").count() == 0, "no line drawn from a single bucket"
    page.unroute("**/v1/console")
    page.close()


def test_a_thousand_models_problems_first_and_a_person_finds_one(gateway: Proc, browser: Any) -> None:
    """At a thousand models the table draws the first 200, problems first, says so, and the find box and
    "problems only" narrow it to the model a person wants."""
    import copy

    from playwright.sync_api import expect

    doc = get(f"{gateway.url}/v1/console").json()
    good = next(m for m in doc["models"] if m["name"] == "good")
    many = []
    for i in range(1000):
        m = copy.deepcopy(good)
        m["name"] = f"m{i:04d}"
        m["health"] = "quarantined" if i == 777 else "live"
        m["reason"] = "drift on tenure" if i == 777 else ""
        m["recent"]["degraded_share"], m["audits_open"] = 0.0, 0  # no trouble but the one quarantine
        for tier in m["chain"]:
            if tier.get("breaker"):
                tier["breaker"] = "closed"
        many.append(m)
    doc["models"] = many

    page = page_showing(browser, gateway, doc)
    rows = page.locator("#models tbody tr")
    expect(rows).to_have_count(200, timeout=10_000)
    assert rows.first.get_attribute("data-model") == "m0777", "problems first"
    expect(page.locator("#shown")).to_contain_text("the first 200 shown (problems first)")
    page.fill("#find", "m0512")
    expect(rows).to_have_count(1)
    expect(page.locator("#models tr[data-model=m0512]")).to_be_visible()
    expect(page.locator("#shown")).to_contain_text("1 of 1000 models match")
    page.fill("#find", "")
    page.check("#troubled")
    expect(rows).to_have_count(1)
    expect(page.locator("#models tr[data-model=m0777]")).to_contain_text("quarantined")
    shot(page, "thousand-find")
    page.unroute("**/v1/console")
    page.close()
