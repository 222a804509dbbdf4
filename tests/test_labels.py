"""Delayed labels: saved once per request id, a correction replaces the label (and is seen again by the
monitor), times as epoch or ISO, files with their columns named when they are missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from failsoft.errors import InvalidRequest
from failsoft.labels import Label, ingest_file, save_labels
from failsoft.store import open_store
from failsoft.store.labels import Labels


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = open_store(f"sqlite:///{tmp_path / 'failsoft.db'}")
    s.connect()
    yield s
    s.close()


def test_a_correction_replaces_the_label_and_is_read_again(store) -> None:  # type: ignore[no-untyped-def]
    labels = Labels(store)
    assert save_labels(store, [Label("r1", 1), Label("r2", [0, 1], "2026-01-02T03:04:05+00:00")]) == 2
    found, mark = labels.since(0.0)
    assert found == {"r1": 1, "r2": [0, 1]}
    time.sleep(0.01)
    save_labels(store, [Label("r1", 1)])  # the same label again: nothing changes
    assert labels.since(mark) == ({}, mark)
    save_labels(store, [Label("r1", 0)])  # a correction
    found, later = labels.since(mark)
    assert found == {"r1": 0} and later > mark
    rows = store.execute("SELECT request_id, label_time FROM labels WHERE request_id = 'r2'")
    assert rows[0][1] == 1767323045.0, "an ISO time with its offset, as epoch seconds"


def test_a_label_without_a_value_or_with_a_bad_time_is_refused(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="has no label"):
        save_labels(store, [Label("r1", None)])
    with pytest.raises(InvalidRequest, match="not epoch seconds or an ISO"):
        save_labels(store, [Label("r1", 1, "yesterday")])


def test_a_file_missing_its_columns_says_which(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "labels.csv"
    good.write_text("id,label,time\nr1,1,\nr2,0.5,1700000000\n")
    assert ingest_file(store, good, progress=False) == 2
    assert Labels(store).since(0.0)[0] == {"r1": 1, "r2": 0.5}, "numbers back to numbers"
    bad = tmp_path / "bad.csv"
    bad.write_text("request,outcome\nr1,1\n")
    with pytest.raises(InvalidRequest) as info:
        ingest_file(store, bad, progress=False)
    assert "id" in str(info.value) and "label" in str(info.value)
