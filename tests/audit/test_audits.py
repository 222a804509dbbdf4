"""Humans in the loop against a real server: a fault held past audit_after opens one audit item, a real
webhook receiver hears of it, each action does what it says and is recorded with the token owner."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from failsoft.audit.notify import new_secret
from failsoft.demo.procs import Proc, free_port
from tests.portfolios import default_tier, model, oip_tier, python_tier, write
from tests.store.test_outage import post

ALICE = "alice-token-0123456789abcdef"
SECRET = new_secret()


class Receiver:
    """A webhook endpoint: a real HTTP server on loopback that keeps what it is sent."""

    def __init__(self, fail_first: int = 0) -> None:
        received = self.received = []
        raw = self.raw = []  # (body, headers) of every delivery, failed ones included
        failures = [fail_first]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                raw.append((body, dict(self.headers.items())))
                if failures[0] > 0:
                    failures[0] -= 1
                    self.send_response(503)
                else:
                    received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def portfolio(tmp: Path, webhook: str, audit: dict[str, Any] | None = None, **tables: Any) -> Path:
    """``bad``: its only tier is a backend that is not there; ``good``: an in-process model."""
    remote = oip_tier(
        "remote",
        f"http://127.0.0.1:{free_port()}",
        "bad",
        breaker={"window": 4, "min_calls": 2, "open_ms": 60000},
    )
    models = {
        "bad": model(remote, default_tier(["a", "b"]), inputs=(), output={"type": "list"}, deadline_ms=50),
        "good": model(python_tier("cpu", "tests.helpers:score"), default_tier(0.5), deadline_ms=50),
    }
    watch = {"after_s": 1.0, "window_s": 1.0, "min_answers": 1, **({"webhook": webhook} if webhook else {})}
    return write(tmp, models, audit={**watch, **(audit or {})}, **tables)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def start(tmp: Path, webhook: str, audit: dict[str, Any] | None = None, **tables: Any) -> Proc:
    tokens = tmp / "tokens.toml"
    tokens.write_text(f'alice = "{ALICE}"\n')
    os.environ["FAILSOFT_TOKENS_FILE"] = str(tokens)
    os.environ["FAILSOFT_WEBHOOK_SECRET"] = SECRET
    try:
        cmd = [
            sys.executable,
            "-m",
            "failsoft.cli",
            "serve",
            str(portfolio(tmp, webhook, audit, **tables)),
            "--log-level",
            "warning",
        ]
        return Proc(cmd, "/v2/health/ready", tmp / "gw.log").start()
    finally:
        del os.environ["FAILSOFT_TOKENS_FILE"], os.environ["FAILSOFT_WEBHOOK_SECRET"]


async def traffic(base: str, seconds: float) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as s:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for model, inputs in (("bad", {}), ("good", {"x": 3})):
                t = time.perf_counter()
                async with s.post(f"{base}/v1/models/{model}/predict", json={"inputs": inputs}) as r:
                    assert r.status == 200
                    latencies.append((await r.json())["latency_ms"])  # the gateway's own
                assert (time.perf_counter() - t) < 0.5, "the client's clock, bounded for a loaded machine"
            await asyncio.sleep(0.02)
    return latencies


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


async def test_fault_past_audit_after_opens_one_item_and_actions_are_recorded(
    tmp_path: Path, receiver: Receiver
) -> None:
    gw = start(tmp_path, receiver.url)
    try:
        await traffic(gw.url, 4.0)
        items = get(gw.url + "/v1/audits")["audits"]
        assert [(i["model"], i["kind"], i["status"]) for i in items] == [("bad", "fallback", "open")]
        item = items[0]
        assert item["details"]["default_value"] == ["a", "b"] and item["details"]["reasons"]
        assert any(e["event"] == "audit_opened" and e["audit_id"] == item["id"] for e in receiver.received)
        # every delivery is signed the Standard Webhooks way: its reference library accepts it, and
        # refuses it with a byte of the body changed or under another secret
        body, headers = receiver.raw[0]
        assert Webhook(SECRET).verify(body, headers)["event"] == "audit_opened"
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(body.replace(b'"bad"', b'"bax"'), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(body, headers)
        episodes = get(gw.url + "/v1/models/bad/episodes")["episodes"]
        assert (
            episodes
            and episodes[0]["degraded"] > 0
            and not get(gw.url + "/v1/models/good/episodes")["episodes"]
        )

        base = f"{gw.url}/v1/audits/{item['id']}"
        assert post(base + "/ack", {})[0] == 401, "no token: refused"
        assert post(base + "/ack", {}, "not-a-valid-token-xxxxxx")[0] == 401
        assert get(base)["status"] == "open", "a refused action changed nothing"
        status, done = post(base + "/ack", {"comment": "looking"}, ALICE)
        assert status == 200 and done["item"]["status"] == "acknowledged"
        status, done = post(
            base + "/resolve", {"action": "replace_default", "value": ["z"], "comment": "fresh"}, ALICE
        )
        assert status == 200 and done["item"]["status"] == "resolved"
        assert post(gw.url + "/v1/models/bad/predict", {"inputs": {}})[1]["outputs"] == ["z"]
        assert post(base + "/resolve", {"action": "restore"}, ALICE)[0] == 400, "already resolved"
        bad = post(base + "/resolve", {"action": "replace_default", "value": []}, ALICE)
        assert bad[0] == 400

        trail = get(gw.url + "/v1/audits/log")["log"]
        assert [(a["action"], a["actor"]) for a in trail[:2]] == [
            ("replace_default", "alice"),
            ("ack", "alice"),
        ]
        assert trail[0]["details"] == {"old": ["a", "b"], "new": ["z"]}
        kinds = [e["kind"] for e in get(gw.url + "/v1/models/bad/events")["events"]]
        assert "default_pinned" in kinds, "a shared state change, applied by every replica"
        with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'failsoft_webhook_deliveries_total{outcome="sent"} 1.0' in metrics
        assert 'failsoft_default_pinned{model="bad",tier="default"} 1.0' in metrics
        assert 'failsoft_default_pinned{model="good",tier="default"} 0.0' in metrics
    finally:
        gw.stop()
    gw = start(tmp_path, receiver.url)
    try:
        assert post(gw.url + "/v1/models/bad/predict", {"inputs": {}})[1]["outputs"] == ["z"], "kept"
    finally:
        gw.stop()


async def test_keep_out_and_restore(tmp_path: Path, receiver: Receiver) -> None:
    gw = start(tmp_path, receiver.url)
    try:
        await traffic(gw.url, 3.0)
        item = get(gw.url + "/v1/audits")["audits"][0]
        status, _ = post(
            f"{gw.url}/v1/audits/{item['id']}/resolve", {"action": "keep_out", "for_s": 1.5}, ALICE
        )
        assert status == 200 and health_of_model(gw.url, "bad") == "quarantined"
        out = post(gw.url + "/v1/models/bad/predict", {"inputs": {}})[1]
        assert out["reason"] == "quarantined"
        deadline = time.monotonic() + 6
        while health_of_model(gw.url, "bad") != "live" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert health_of_model(gw.url, "bad") == "live", "back after the keep-out period"
        actions = [a["action"] for a in get(gw.url + "/v1/audits/log")["log"]]
        assert actions[:2] == ["keep_out_ended", "keep_out"]

        # the fault goes on: a new item opens; it is handled from the command line
        while len(get(gw.url + "/v1/audits?status=open")["audits"]) < 1 and time.monotonic() < deadline + 6:
            await traffic(gw.url, 0.5)
        item = get(gw.url + "/v1/audits?status=open")["audits"][0]
        env = {**os.environ, "FAILSOFT_URL": gw.url, "FAILSOFT_ADMIN_TOKEN": ALICE}
        listed = cli(env, "list", "--json")
        assert [i["id"] for i in json.loads(listed)["audits"] if i["status"] == "open"] == [item["id"]]
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "failsoft.cli",
                "audits",
                "resolve",
                str(item["id"]),
                "--action",
                "refresh_default",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 1 and "static value" in refused.stderr
        cli(env, "resolve", str(item["id"]), "--action", "restore", "--comment", "backend fixed")
        assert health_of_model(gw.url, "bad") == "live"
        assert all(t["breaker"]["state"] == "closed" for t in get(gw.url + "/v1/models/bad")["chain"][:1])
        trail = cli(env, "log", "--model", "bad")
        assert "restore" in trail and "alice" in trail
    finally:
        gw.stop()


@pytest.mark.timing
async def test_a_webhook_receiver_that_is_down_does_not_slow_serving(tmp_path: Path) -> None:
    gw = start(tmp_path, f"http://127.0.0.1:{free_port()}/hook")
    try:
        latencies = await traffic(gw.url, 3.0)
        assert get(gw.url + "/v1/audits")["audits"], "the item opened all the same"
    finally:
        gw.stop()
    assert max(latencies) < 55


async def test_an_old_default_opens_an_item_and_unacknowledged_items_are_reminded(
    tmp_path: Path, receiver: Receiver
) -> None:
    gw = start(tmp_path, receiver.url, {"default_max_age_s": 1.0, "remind_after_s": 1.0})
    try:
        await asyncio.sleep(4.0)
        items = get(gw.url + "/v1/audits?status=unresolved")["audits"]
        stale = [i for i in items if i["kind"] == "stale_default"]
        assert sorted(i["model"] for i in stale) == ["bad", "good"]
        assert stale[0]["details"]["age_s"] >= 1.0
        events = [e["event"] for e in receiver.received]
        assert "audit_opened" in events and "audit_reminder" in events
        good = next(i for i in stale if i["model"] == "good")
        status, done = post(f"{gw.url}/v1/audits/{good['id']}/resolve", {"action": "approve_default"}, ALICE)
        assert status == 200 and done["action"]["details"] == {"value": 0.5, "origin": "config"}
    finally:
        gw.stop()


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "failsoft.cli", "audits", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def health_of_model(base: str, model: str) -> str:
    return str(get(f"{base}/v1/models/{model}")["health"])
