from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from failsoft import Portfolio
from failsoft.errors import ConfigError
from failsoft.tiers.defaults import top_n
from tests.portfolios import default_tier, model, toml


def recs(source: Path, data_dir: str = "state", **tables: Any) -> str:
    """One model answered by its Top-3 of ``source``, recomputed every 50 ms."""
    popular = default_tier(name="popular", source=str(source), top_n=3, refresh_s=0.05)
    return toml({"recs": model(popular, inputs=(), output={"type": "list"})}, data_dir=data_dir, **tables)


def write_events(path: Path, items: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item"])
        w.writerows([("u", i) for i in items])


def test_top_n_from_events_and_counts(tmp_path: Path) -> None:
    write_events(tmp_path / "e.csv", ["a", "b", "b", "c", "c", "c", "d"])
    assert top_n(tmp_path / "e.csv", "item", None, 3) == ["c", "b", "a"]
    pq.write_table(pa.table({"item": ["x", "y", "z"], "n": [5, 50, 7]}), tmp_path / "c.parquet")
    assert top_n(tmp_path / "c.parquet", "item", "n", 2) == ["y", "z"]


async def test_refreshes_and_survives_a_restart_without_source(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    events = tmp_path / "events.csv"
    write_events(events, ["a", "b", "b", "c", "c", "c"])
    path = write_toml(recs(events))
    async with Portfolio.from_toml(path) as p:
        o = await p.predict("recs", {})
        assert o.outputs == ["c", "b", "a"] and o.tier == "popular"
        write_events(events, ["z", "z", "y"])
        deadline = time.monotonic() + 5
        while (await p.predict("recs", {})).outputs != ["z", "y"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert (await p.predict("recs", {})).outputs == ["z", "y"]
        events.write_text("garbage without the column\n1\n")
        await asyncio.sleep(0.2)
        assert (await p.predict("recs", {})).outputs == ["z", "y"], "a broken source keeps the last good copy"
        assert p.chains["recs"].default.refresh_errors > 0
    events.unlink()
    async with Portfolio.from_toml(path) as p:
        assert (await p.predict("recs", {})).outputs == ["z", "y"], "the last good copy came back from disk"
        assert p.chains["recs"].default.origin == "cache"


async def test_no_source_and_no_copy_is_a_config_error(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    path = write_toml(recs(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError) as info:
        async with Portfolio.from_toml(path):
            pass
    assert info.value.key == "models.recs.tiers[0].source"


async def test_static_value_must_pass_output_check(write_toml: Callable[[str], Path]) -> None:
    text = '[models.m]\n[models.m.output]\ntype = "list"\n[[models.m.tiers]]\nkind = "default"\nvalue = []\n'
    with pytest.raises(ConfigError, match="output check"):
        async with Portfolio.from_toml(write_toml(text)):
            pass


async def converge(p: Portfolio, want: list[str], within_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (got := (await p.predict("recs", {})).outputs) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return got


async def test_a_persons_default_is_pinned_shared_by_replicas_and_kept_across_restarts(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    """Two replicas on one store: a value a person sets answers on both, no refresh from the source
    replaces it, a person's refresh unpins it on both, and a replica started later (no copy on its disk)
    starts from the pinned value."""
    events = tmp_path / "events.csv"
    write_events(events, ["a", "b", "b", "c", "c", "c"])
    shared = {"url": f"sqlite:///{tmp_path / 'shared.db'}", "poll_ms": 50}

    def replica(name: str) -> Portfolio:
        text = recs(events, f"state-{name}", store=shared)
        return Portfolio.from_toml(write_toml(text, f"{name}.toml"))

    async with replica("a") as a, replica("b") as b:
        await a.health.replace_default("recs", ["x", "y"], "alice", "the source is broken")
        assert (await a.predict("recs", {})).outputs == ["x", "y"]
        assert await converge(b, ["x", "y"]) == ["x", "y"]
        write_events(events, ["z", "z", "y"])
        await asyncio.sleep(0.3)  # six refresh periods
        assert (await a.predict("recs", {})).outputs == ["x", "y"], "pinned: the source does not replace it"
        assert (await b.predict("recs", {})).outputs == ["x", "y"]
        # a periodic refresh already running when the pin arrived finishes without replacing it
        assert not await asyncio.to_thread(a.chains["recs"].default.refresh)
        assert (await a.predict("recs", {})).outputs == ["x", "y"]
        with pytest.raises(ValueError, match="output check"):
            await a.health.replace_default("recs", "not a list", "alice")
        assert await b.health.refresh_default("recs", "bob", "source fixed")
        assert (await b.predict("recs", {})).outputs == ["z", "y"]
        assert await converge(a, ["z", "y"]) == ["z", "y"], "unpinned everywhere: back to the source"
        assert not a.chains["recs"].default.pinned
        await a.health.replace_default("recs", ["p"], "alice")
        kinds = [e.kind for e in a.state_store.state_events("recs")]
        assert kinds[:3] == ["default_pinned", "default_refreshed", "default_pinned"]
    events.unlink()
    async with replica("c") as c:
        default = c.chains["recs"].default
        assert (await c.predict("recs", {})).outputs == ["p"]
        assert (default.origin, default.pinned, default.set_by) == ("operator", True, "alice")
