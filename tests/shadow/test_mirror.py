"""Mirroring in one process, against the real prediction log: every copy a candidate got is answered
by it and logged against the right request, whether it ran on the loop or in threads, sampled or not,
for requests of one row or several."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pytest

from failsoft.config import load
from failsoft.portfolio import Portfolio
from failsoft.shadow.intake import Intake
from failsoft.store import open_store
from failsoft.validation import Batch
from tests.portfolios import default_tier, model, python_tier, write
from tests.stack import FEATURES


def portfolio(models_dir: Path, tmp_path: Path) -> Path:
    """A live primary and three candidates of the same model: on the loop, in threads, and sampled."""
    path = str(models_dir / "cpu.joblib")
    m = model(
        python_tier("live", path=path),
        default_tier(0.5),
        inputs=tuple(FEATURES),
        output={"type": "float", "min": 0, "max": 1},
        deadline_ms=200,
        candidates=(
            python_tier("on-loop", path=path),
            python_tier("threads", path=path, run="thread"),
            python_tier("half", path=path, sample=0.5),
        ),
    )
    return write(tmp_path, {"m": m}, trusted_model_dirs=[str(models_dir)])


async def test_every_copy_is_answered_and_logged_against_its_request(
    models_dir: Path, tmp_path: Path
) -> None:
    p = Portfolio(load(portfolio(models_dir, tmp_path)))
    await p.start()
    assert p.mirror is not None and p.mirror.intakes["m"].packed is not None, (
        "numbers only: every tier reads them"
    )
    eligible = p.chains["m"].eligible
    assert not eligible["threads"].backend.inline and eligible["on-loop"].backend.inline
    rng = random.Random(3)
    sent: dict[str, list[list[float]]] = {}
    for i in range(400):
        rows = [[rng.uniform(-3, 3) for _ in FEATURES] for _ in range(1 if i % 4 else 3)]
        rid = f"req-{i}"
        await p.predict("m", [dict(zip(FEATURES, r, strict=True)) for r in rows], id=rid)
        sent[rid] = rows
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    counts = {name: (lane.mirrored, lane.dropped) for (_, name), lane in p.mirror.lanes.items()}
    await p.close()
    assert counts["on-loop"] == (400, 0) and counts["threads"] == (400, 0)
    assert 120 < counts["half"][0] < 280 and counts["half"][1] == 0
    model = joblib.load(models_dir / "cpu.joblib")
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}")
    store.connect()
    try:
        got: dict[str, dict[str, list[float]]] = {}
        for page in store.iter_predictions(shadow=True):
            for r in page:
                assert r[7] is None, f"{r[4]} failed: {r[7]}"
                got.setdefault(r[4], {})[r[1]] = json.loads(r[8])
    finally:
        store.close()
    assert set(got["on-loop"]) == set(got["threads"]) == set(sent)
    assert len(got["half"]) == counts["half"][0]
    for tier, answers in got.items():
        for rid, out in answers.items():
            want = model.predict_proba(np.array(sent[rid]))[:, 1]
            assert out == pytest.approx(want.tolist(), abs=1e-9), (tier, rid)


def rows_batch(*rows: tuple[float, ...]) -> Batch:
    """A batch of ``rows`` over inputs a and b, its values read as the schema reads them."""
    b = Batch(("a", "b"), [{"a": r[0], "b": r[1]} for r in rows])
    b.values = list(rows)
    return b


def answer(rid: str, b: Batch, *candidates: str) -> Any:
    """What the intake reads of an answer: its candidates, its batch and its request id."""
    tiers = tuple(SimpleNamespace(name=c) for c in candidates)
    return SimpleNamespace(candidates=tiers, batch=b, outcome=SimpleNamespace(id=rid))


def test_the_intake_keeps_rows_as_numbers_and_counts_what_it_cannot_keep() -> None:
    """The intake packs a row's numbers; a full intake, and a number no float holds, are dropped and
    counted for each candidate; several rows go numpy's way; the pump's matrix is writable."""
    lanes = {"c1": SimpleNamespace(dropped=0), "c2": SimpleNamespace(dropped=0)}
    intake = Intake(2, 3, True, lanes)  # type: ignore[arg-type]
    for rid, b in [
        ("r1", rows_batch((1.0, 2.0))),
        ("huge", rows_batch((10**400, 1.0))),  # no float holds it: dropped
        ("r2", rows_batch((3.0, 4.0), (5.0, 6.0))),  # two rows
        ("r3", rows_batch((7.0, 8.0))),
        ("full", rows_batch((9.0, 9.0))),  # three requests wait: dropped
    ]:
        intake.listen(answer(rid, b, "c1", "c2"))
    assert [lane.dropped for lane in lanes.values()] == [2, 2]
    pile = intake.take()
    assert pile.ids == ["r1", "r2", "r3"] and pile.sizes == [1, 2, 1]
    assert pile.matrix is not None and pile.matrix.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    pile.matrix[0, 0] = 0.0  # a model may change its input
    assert not intake.ids and intake.take().matrix.shape == (0, 2)  # type: ignore[union-attr]


def test_the_intake_holds_no_more_rows_than_its_buffer_whatever_rows_a_request_brings() -> None:
    """The bound on rows counts the extra rows of requests that brought several: a one-row request past it
    is dropped, even while fewer requests than the limit wait."""
    lanes = {"c": SimpleNamespace(dropped=0)}
    intake = Intake(2, 100, True, lanes)  # type: ignore[arg-type]
    intake.max_rows = intake.room = 4  # a buffer of four rows
    intake.listen(answer("r1", rows_batch((1.0, 1.0)), "c"))
    intake.listen(answer("r2", rows_batch((2.0, 2.0), (3.0, 3.0)), "c"))
    intake.listen(answer("r3", rows_batch((4.0, 4.0)), "c"))
    intake.listen(answer("r4", rows_batch((5.0, 5.0)), "c"))  # a fifth row: no room
    assert lanes["c"].dropped == 1
    pile = intake.take()
    assert pile.ids == ["r1", "r2", "r3"] and pile.sizes == [1, 2, 1]
    assert pile.matrix is not None and pile.matrix[:, 0].tolist() == [1, 2, 3, 4]
    intake.listen(answer("r5", rows_batch((6.0, 6.0)), "c"))  # emptied: room again
    assert intake.take().ids == ["r5"]
