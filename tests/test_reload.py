"""Changing the portfolio while it serves (failsoft/reload.py): models added, removed and replaced in one
step; a request in flight finishes on the chain it started on; unchanged models keep their chain (breakers,
health); a wrong file, or a change only a restart can make, changes nothing and says why; each change is
in the audit log. Then a real gateway: ``POST /v1/reload`` with a token, SIGHUP and ``failsoft reload``,
under load, with no answer other than 200."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from failsoft import Portfolio
from failsoft.errors import ConfigError, UnknownModel
from failsoft.store.audits import AuditQueue
from tests.http import post
from tests.portfolios import default_tier, model, python_tier, write

TOKEN = "reload-token-0123456789"


def models(**values: float) -> dict[str, Any]:
    """A model per name, answering by tests.helpers:score, its default the value given."""
    return {name: model(python_tier("cpu", "tests.helpers:score"), default_tier(v), deadline_ms=500)
            for name, v in values.items()}  # fmt: skip


async def test_models_are_added_removed_and_replaced_in_one_step(tmp_path: Path) -> None:
    path = write(tmp_path, models(keep=0.1, change=0.2, drop=0.3))
    async with Portfolio.from_toml(path) as p:
        kept = p.chains["keep"]
        await p.set_health("keep", "quarantined", "testing", "alice")
        write(tmp_path, models(keep=0.1, change=0.25, add=0.4))
        change = await p.reload(actor="alice")
        assert (change.added, change.removed, change.replaced, change.unchanged) == (
            ["add"],
            ["drop"],
            ["change"],
            1,
        )
        assert p.chains["keep"] is kept and kept.health == "quarantined", (
            "unchanged: its own chain, its health"
        )
        assert p.chains["change"].default.value == 0.25
        assert (await p.predict("add", {"x": 3})).outputs == 0.3
        with pytest.raises(UnknownModel):
            await p.predict("drop", {"x": 3})
        log = AuditQueue(p.state_store).log()
        assert {(a.model, a.action, a.actor) for a in log} >= {
            ("add", "model_added", "alice"), ("drop", "model_removed", "alice"),
            ("change", "model_replaced", "alice"),
        }  # fmt: skip
        assert (await p.reload()).empty, "the same file again: nothing to do"


async def test_a_request_in_flight_finishes_on_the_chain_it_started_on(tmp_path: Path) -> None:
    from tests import helpers

    hung = model(
        python_tier("cpu", "tests.helpers:hang", timeout_ms=4000), default_tier(0.1), deadline_ms=5000
    )
    path = write(tmp_path, {"m": hung})
    async with Portfolio.from_toml(path) as p:
        old = p.chains["m"]
        running = asyncio.create_task(p.predict("m", {"x": 3}))
        await asyncio.sleep(0.05)  # the request is in the old chain's tier, held there
        write(tmp_path, models(m=0.9))
        try:
            change = await p.reload()
            assert change.replaced == ["m"] and p.chains["m"] is not old and not running.done()
            assert (await p.predict("m", {"x": 3})).outputs == 0.3, "new requests: the new chain"
        finally:
            helpers.RELEASE.set()
        answer = await running
        helpers.RELEASE.clear()
        assert (answer.tier, answer.outputs, answer.degraded) == ("cpu", 0.5, False), "the old chain's tier"


async def test_a_wrong_file_changes_nothing_and_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, models(a=0.1, b=0.2))
    async with Portfolio.from_toml(path) as p:
        chains = dict(p.chains)
        bad = models(a=0.1, b=0.2, c=0.3)
        bad["c"]["tiers"][0]["timeout_ms"] = -5
        write(tmp_path, bad)
        with pytest.raises(ConfigError, match=r"models\.c\.tiers\[0\]\.timeout_ms"):
            await p.reload()
        path.write_text("[models.a\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            await p.reload()
        missing = models(a=0.1, z=0.2)
        missing["z"]["tiers"][0] = python_tier("cpu", "tests.no_such_module:f")
        write(tmp_path, missing)
        with pytest.raises(ConfigError, match=r"models\.z\.tiers\[0\]\.target"):
            await p.reload()
        assert p.chains == chains and (await p.predict("b", {"x": 3})).tier == "cpu"


async def test_what_only_a_restart_can_change_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, models(a=0.1))
    async with Portfolio.from_toml(path) as p:
        shadowed = models(a=0.1, b=0.2)
        shadowed["b"]["candidates"] = [python_tier("next", "tests.helpers:score")]
        write(tmp_path, shadowed)
        with pytest.raises(ConfigError, match=r"models\.b\.candidates: .*restart failsoft serve"):
            await p.reload()
        write(tmp_path, models(a=0.1), server={"max_batch": 10})
        change = await p.reload()
        assert change.empty and change.restart_needed == ["server"]


async def test_a_model_file_written_again_in_place_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    x = np.random.default_rng(0).uniform(0, 1, (200, 1))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), tmp_path / "models" / "lr.joblib")
    lr = model(python_tier("cpu", path=tmp_path / "models" / "lr.joblib"), default_tier(0.5),
               inputs=({"name": "x", "min": 0, "max": 1},), deadline_ms=500)  # fmt: skip
    write(tmp_path, {"lr": lr}, trusted_model_dirs=[str(tmp_path / "models")])
    async with Portfolio.from_toml(tmp_path / "portfolio.toml") as p:
        first = (await p.predict("lr", {"x": 0.9})).outputs
        time.sleep(0.01)  # a later modification time
        joblib.dump(
            LogisticRegression().fit(x, (x[:, 0] < 0.5).astype(int)), tmp_path / "models" / "lr.joblib"
        )
        assert (await p.reload()).replaced == ["lr"]
        assert (await p.predict("lr", {"x": 0.9})).outputs < 0.5 < first, "the retrained model answers"


def test_a_real_gateway_reloads_under_load_with_nothing_but_200s(tmp_path: Path) -> None:
    """Three reloads (the control plane, SIGHUP, ``failsoft reload``) while four threads keep asking every
    model of both files: every answer 200; each new model answers within a second of its reload."""
    from failsoft.demo.procs import Proc

    path = write(tmp_path, {**models(**{f"m{i}": 0.5 for i in range(10)})}, store={"log_predictions": False})
    env = {**os.environ, "FAILSOFT_ADMIN_TOKEN": TOKEN}
    gw = Proc([sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning"],
              "/v2/health/ready", tmp_path / "gw.log")  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAILSOFT_ADMIN_TOKEN", TOKEN)
        gw.start()
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            name = f"m{i % 20}"  # half of them exist only after a reload: 404 is theirs, never a 5xx
            reply = post(f"{gw.url}/v1/models/{name}/predict", {"inputs": {"x": 3}}, timeout=10)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        auth = {"authorization": f"Bearer {TOKEN}"}
        write(tmp_path, {**models(**{f"m{i}": 0.5 for i in range(5, 15)})}, store={"log_predictions": False})
        reply = post(f"{gw.url}/v1/reload", None, headers=auth)
        assert reply.status_code == 200, reply.text
        assert sorted(reply.json()["added"]) == [f"m{i}" for i in range(10, 15)]
        assert post(f"{gw.url}/v1/models/m12/predict", {"inputs": {"x": 3}}).json()["tier"] == "cpu"
        assert post(f"{gw.url}/v1/reload", None).status_code == 401, "a token is needed"
        write(tmp_path, {**models(**{f"m{i}": 0.7 for i in range(5, 15)})}, store={"log_predictions": False})
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while post(f"{gw.url}/v1/models/m7/predict", {"inputs": {"x": "bad"}}).json()["outputs"] != 0.7:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        (tmp_path / "portfolio.toml").write_text("[models.m1\n")
        reply = post(f"{gw.url}/v1/reload", None, headers=auth)
        assert reply.status_code == 422 and "not valid TOML" in reply.json()["error"], reply.text
        write(tmp_path, {**models(**{f"m{i}": 0.7 for i in range(0, 15)})}, store={"log_predictions": False})
        cli = subprocess.run([sys.executable, "-m", "failsoft.cli", "reload", str(path), "--url", gw.url],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "5 added, 0 removed, 0 replaced, 10 unchanged" in cli.stdout, cli.stdout
    finally:
        stop.set()
        for t in threads:
            t.join()
        gw.stop()
    assert set(statuses) <= {200, 404} and statuses.get(200, 0) > 100, statuses


async def test_replicas_on_postgresql_follow_a_reload_made_on_one(tmp_path: Path, pg_url: str) -> None:
    """Two replicas, each with its copy of the same file, share PostgreSQL: a reload through one is
    announced (the file's SHA-256) and the other reloads its own copy; a copy not updated yet is said and
    followed once it is."""
    from tests.helpers import until

    tables: dict[str, Any] = {"data_dir": "state", "store": {"url": pg_url, "poll_ms": 100}}
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        write(folder, models(m=0.1), **tables)
    async with (
        Portfolio.from_toml(a / "portfolio.toml") as one,
        Portfolio.from_toml(b / "portfolio.toml") as two,
    ):
        for folder in (a, b):
            write(folder, models(m=0.1, added=0.2), **tables)
        assert (await one.reload(actor="alice")).added == ["added"]
        await until(lambda: "added" in two.chains, timeout_s=10)
        log = AuditQueue(two.state_store).log(model="added")
        assert {a.actor for a in log} >= {"alice", "alice (another replica)"}
        write(a, models(m=0.1, added=0.2, later=0.3), **tables)  # b's copy is not updated yet
        await one.reload(actor="bob")
        await asyncio.sleep(0.5)
        assert "later" not in two.chains, "its own file differs: nothing changed"
        write(b, models(m=0.1, added=0.2, later=0.3), **tables)
        await until(lambda: "later" in two.chains, timeout_s=10)
