"""The demo's recommenders: Top-10 items per segment (and hour), learned from a generated event log."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt


class SegmentPopular:
    """The cheap CPU recommender: the most popular items of the user's segment.

    ``predict`` takes rows of [segment, hour, recent_views] and returns (n, k) item ids.
    """

    def __init__(self, k: int = 10, by_hour: bool = False) -> None:
        self.k = k
        self.by_hour = by_hour
        self.table: dict[tuple[int, int], list[str]] = {}
        self.fallback: list[str] = []

    def _key(self, segment: float, hour: float) -> tuple[int, int]:
        return int(segment), (int(hour) // 6 if self.by_hour else 0)

    def fit(self, events: list[tuple[int, int, str]]) -> SegmentPopular:
        counts: dict[tuple[int, int], Counter[str]] = {}
        overall: Counter[str] = Counter()
        for segment, hour, item in events:
            counts.setdefault(self._key(segment, hour), Counter())[item] += 1
            overall[item] += 1
        self.table = {k: [i for i, _ in c.most_common(self.k)] for k, c in counts.items()}
        self.fallback = [i for i, _ in overall.most_common(self.k)]
        return self

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.array([self.table.get(self._key(r[0], r[1]), self.fallback) for r in np.asarray(x)])
