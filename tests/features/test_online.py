"""The online feature lookup: the newest value that has landed per entity, feature latency, and a model
served down its chain with reason ``stale_features`` when its values are too old or missing."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import generate_latest

from failsoft import Portfolio, Reason
from failsoft.errors import ConfigError
from failsoft.features import FeatureStore
from failsoft.features.online import OnlineTable
from tests.portfolios import default_tier, model, python_tier, toml

UTC = dt.UTC


def at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def test_newest_landed_value_per_entity_and_held_back_rows(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    fs = FeatureStore(tmp_path / "features")
    t = now[0]
    rows = [
        # user 1: an older event, a newer one, and a correction of the newer one that landed later
        (1, t - 500, t - 400, 1.0),
        (1, t - 100, t - 90, 2.0),
        (1, t - 100, t - 50, 3.0),
        # user 2: its newest event lands only in the future
        (2, t - 300, t - 290, 7.0),
        (2, t - 20, t + 60, 8.0),
    ]
    fs.ingest(
        "spend",
        pa.table(
            {
                "user": [r[0] for r in rows],
                "event_time": [at(r[1]) for r in rows],
                "available_at": [at(r[2]) for r in rows],
                "spend": [r[3] for r in rows],
            }
        ),
        entity=["user"],
    )
    online = OnlineTable(fs, "spend", now=lambda: now[0])
    online.load()
    assert online.values[1] == (t - 100, (3.0,))
    assert online.values[2] == (t - 300, (7.0,))
    assert not online.due()
    now[0] += 61  # the held-back row has landed
    assert online.due()
    online.load()
    assert online.values[2] == (t - 20, (8.0,))
    lags = [r[2] - r[1] for r in rows]
    assert online.lag["rows"] == 5 and online.lag["entities"] == 2
    assert online.lag["lag_s"]["max"] == pytest.approx(max(lags))
    assert online.lag["lag_s"]["p50"] == pytest.approx(float(np.quantile(lags, 0.5)))
    assert online.lag["lag_s"]["p95"] == pytest.approx(float(np.quantile(lags, 0.95)))
    assert online.newest_age_s() == pytest.approx(1.0)  # the newest landed at t + 60, now is t + 61


def test_composite_entity_keys(tmp_path: Path) -> None:
    fs = FeatureStore(tmp_path)
    t = time.time()
    fs.ingest(
        "pairs",
        pa.table(
            {
                "user": [1, 1],
                "item": ["a", "b"],
                "event_time": [at(t - 10)] * 2,
                "available_at": [at(t - 5)] * 2,
                "clicks": [3, 4],
            }
        ),
        entity=["user", "item"],
    )
    online = OnlineTable(fs, "pairs")
    online.load()
    assert online.values[(1, "b")][1] == (4,)


def portfolio_toml(**use: Any) -> str:
    """``m`` reads ``spend`` from the feature table (``use`` adds to how); ``other`` reads nothing."""
    m = model(
        python_tier("heavy", "tests.helpers:spend_score"),
        python_tier("cheap", "tests.helpers:score"),
        default_tier(0.25),
        inputs=("x", "spend"),
        deadline_ms=200,
        features=[{"table": "spend", "max_age_s": 3600, **use}],
    )
    other = model(default_tier(1), inputs=())
    return toml({"m": m, "other": other}, features={"dir": "features", "refresh_s": 0.1})


TOML = portfolio_toml()


def ingest(fs: FeatureStore, rows: list[tuple[int, float, float]]) -> None:
    fs.ingest(
        "spend",
        pa.table(
            {
                "user": [r[0] for r in rows],
                "event_time": [at(r[1]) for r in rows],
                "spend": [r[2] for r in rows],
            }
        ),
        entity=["user"],
    )


async def test_stale_or_missing_values_go_down_the_chain(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    fs = FeatureStore(tmp_path / "features")
    now = time.time()
    ingest(fs, [(1, now - 60, 40.0), (2, now - 7200, 90.0)])  # user 2's newest value is two hours old
    async with Portfolio.from_toml(write_toml(TOML)) as p:
        fresh = await p.predict("m", {"user": 1, "x": 5})
        assert (fresh.tier, fresh.outputs, fresh.degraded) == ("heavy", 0.4, False)
        # the request's own value wins over the store's
        own = await p.predict("m", {"user": 1, "x": 5, "spend": 10.0})
        assert own.outputs == 0.1
        stale = await p.predict("m", {"user": 2, "x": 5})
        assert (stale.tier, stale.reason, stale.outputs) == ("cheap", Reason.STALE_FEATURES, 0.5)
        assert "7200 s old (max 3600 s)" in stale.skips[0].detail
        # nothing for user 3: the cheap tier cannot run without spend either, so the default answers
        missing = await p.predict("m", {"user": 3, "x": 5})
        assert (missing.tier, missing.reason, missing.outputs) == ("default", Reason.STALE_FEATURES, 0.25)
        assert [s.reason for s in missing.skips] == [Reason.STALE_FEATURES, Reason.INVALID_INPUT]
        # a batch with one stale row goes down as a whole
        both = await p.predict("m", [{"user": 1, "x": 1}, {"user": 2, "x": 2}])
        assert both.tier == "cheap" and both.outputs == [0.1, 0.2]
        # other models are untouched
        assert (await p.predict("other", {})).degraded is False

        # a fresh value for user 2 lands: the lookup picks it up on its own
        ingest(fs, [(2, time.time() - 5, 60.0)])
        for _ in range(100):
            await asyncio.sleep(0.05)
            again = await p.predict("m", {"user": 2, "x": 5})
            if again.tier == "heavy":
                break
        assert (again.tier, again.outputs) == ("heavy", 0.6)

        text = generate_latest(p.metrics.registry).decode()
        assert 'failsoft_feature_lag_seconds{stat="p95",table="spend"}' in text
        assert 'failsoft_feature_entities{table="spend"} 2.0' in text
        assert 'reason="stale_features"' in text
        described = {m.name: m for m in p.describe()}["m"]
        assert described.features[0].table == "spend" and described.features[0].entities == 2


def test_config_errors_name_the_key(tmp_path: Path, write_toml: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.features\[0\]\.table: no such feature table"):
        Portfolio.from_toml(write_toml(TOML))
    fs = FeatureStore(tmp_path / "features")
    ingest(fs, [(1, time.time(), 1.0)])
    bad = portfolio_toml(columns=["spent"])
    with pytest.raises(ConfigError, match=r"models\.m\.features\[0\]\.columns: spent not in feature table"):
        Portfolio.from_toml(write_toml(bad))
