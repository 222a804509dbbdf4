"""Portfolio embedded in a Python application: built from a file, started, answering synchronously or
from asyncio, every answer handed to its listeners (the prediction log here), closed cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from failsoft import Health, Portfolio, Reason
from failsoft.store import open_store
from tests.portfolios import default_tier, model, python_tier, write


def portfolio_file(tmp_path: Path) -> Path:
    tiers = (python_tier("cpu", "tests.helpers:score"), default_tier(0.25))
    return write(tmp_path, {"m": model(*tiers, output={"type": "float", "min": 0, "max": 1})})


def test_synchronous_use_answers_and_logs(tmp_path: Path) -> None:
    path = portfolio_file(tmp_path)
    p = Portfolio.from_toml(path)
    with pytest.raises(RuntimeError, match=r"with Portfolio\.from_toml"):
        p.predict_sync("m", {"x": 3})
    with p:
        o = p.predict_sync("m", {"x": 3}, id="first")
        assert (o.tier, o.outputs, o.degraded) == ("cpu", 0.3, False)
        batch = p.predict_sync("m", [{"x": 1}, {"x": 2}])
        assert batch.outputs == [0.1, 0.2]
        assert [t.name for t in p.describe()[0].chain] == ["cpu", "default"]
        assert len(p.chains["m"].listeners) == 1, "the prediction log listens"
    store = open_store(p.store_url)
    store.connect()
    rows = store.execute("SELECT request_id, tier, outputs FROM predictions ORDER BY ts")
    assert [(r[0], r[1]) for r in rows][:1] == [("first", "cpu")] and len(rows) == 2
    store.close()


async def test_a_quarantine_set_here_sends_traffic_down_the_chain(tmp_path: Path) -> None:
    async with Portfolio.from_toml(portfolio_file(tmp_path)) as p:
        state = await p.set_health("m", Health.QUARANTINED, "testing", "alice")
        assert (state.health, state.changed_by) == ("quarantined", "alice")
        o = await p.predict("m", {"x": 3})
        assert (o.tier, o.reason, o.outputs) == ("default", Reason.QUARANTINED, 0.25)
        await p.set_health("m", Health.LIVE, "back", "alice")
        assert (await p.predict("m", {"x": 3})).tier == "cpu"
