"""The safe default: the last tier of every chain. It answers from memory and cannot fail.

Either a static ``value``, or the Top-N most popular items of a counts or events file (CSV or Parquet),
recomputed every ``refresh_s`` seconds off the event loop. Each good copy is written to the data folder
(atomically, fsynced), so a restart starts from the last good list even when the source is gone.

A person may replace it (an audit action): the value is then pinned, kept in the shared store so every
replica answers with it and a restart keeps it, and no refresh from the source replaces it until a person
asks for one (``refresh_default``), which unpins it everywhere.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from failsoft.config import DefaultTierSpec
from failsoft.durable import write_atomic
from failsoft.errors import ConfigError
from failsoft.store.base import DefaultState
from failsoft.tasks import stop
from failsoft.types import TierKind
from failsoft.validation import OutputCheck

log = logging.getLogger("failsoft.tiers.defaults")


def top_n(path: Path, item_column: str, count_column: str | None, n: int) -> list[Any]:
    """The n items with the highest count (summed ``count_column``, else occurrences); ties by item."""
    counts: Counter[Any] = Counter()  # float weights are fine: only the order matters
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        cols = [item_column] + ([count_column] if count_column else [])
        table = pq.read_table(path, columns=cols)
        items = table.column(item_column).to_pylist()
        weights = table.column(count_column).to_pylist() if count_column else [1] * len(items)
        for item, w in zip(items, weights, strict=True):
            if item is not None and w is not None:
                counts[item] += w
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None) or []
            if item_column not in header:
                raise ValueError(f"{path.name} has no column {item_column!r} (columns: {header})")
            if count_column and count_column not in header:
                raise ValueError(f"{path.name} has no column {count_column!r}")
            at = header.index(item_column)
            # Counted in C (Counter over a generator; no dict per row): it runs in a thread beside the
            # request path, and holds the interpreter lock as briefly as it can.
            if count_column:
                by = header.index(count_column)
                for row in reader:
                    if row[at]:
                        counts[row[at]] += int(float(row[by]))
            else:
                counts.update(row[at] for row in reader if row[at])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return [item for item, _ in ranked[:n]]


class DefaultBackend:
    kind = TierKind.DEFAULT

    def __init__(
        self,
        spec: DefaultTierSpec,
        model: str,
        check: OutputCheck,
        source: Path | None,
        cache_file: Path,
        file: str,
        key: str,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.model = model
        self._check = check
        self._source = source
        self._cache_file = cache_file
        self._file, self._key = file, key
        self.value: Any = spec.value
        self.refreshed_at: float | None = None
        self.origin = "config" if spec.value is not None else "none"
        self.refresh_errors = 0
        # a person's value, kept until a person asks for a refresh; its author and store revision
        self.pinned = False
        self.set_by: str | None = None
        self.revision = 0
        self._lock = threading.Lock()  # a pin and a refresh finishing in a thread, one at a time
        self._task: asyncio.Task[None] | None = None

    def answer(self, n: int) -> list[Any]:
        return [self.value] * n

    async def start(self) -> None:
        if self._source is None:
            if (problem := self._check.check(self.value)) is not None:
                raise ConfigError(
                    self._file,
                    f"{self._key}.value",
                    f"fails the model's output check: {problem}",
                    "give a value the output check accepts",
                )
            return
        if not self.pinned:  # a person's value stands until a person asks for a refresh
            self._load_cache()
        ok = self.pinned or await asyncio.to_thread(self.refresh)
        if not ok and self.value is None:
            raise ConfigError(
                self._file,
                f"{self._key}.source",
                f"cannot compute the default from {self._source} and no last good copy exists",
                "fix the source file, or add value = ... as a starting answer",
            )
        self._task = asyncio.create_task(self._refresh_loop(), name=f"refresh-{self.model}-{self.name}")

    def refresh(self, unpin: bool = False) -> bool:
        """Recompute from the source; keep the previous answer if that fails. Returns success. A value a
        person pinned meanwhile stands (the periodic refresh may be running when the pin arrives), unless
        ``unpin``: a person asked for this refresh."""
        assert self._source is not None
        try:
            value = top_n(self._source, self.spec.item_column, self.spec.count_column, self.spec.top_n)
        except Exception as err:  # a broken source never breaks the default: keep the last good copy
            self.refresh_errors += 1
            log.warning(
                json.dumps(
                    {
                        "event": "default_refresh_failed",
                        "model": self.model,
                        "tier": self.name,
                        "source": str(self._source),
                        "error": str(err),
                    }
                )
            )
            return False
        if (problem := self._check.check(value)) is not None:
            self.refresh_errors += 1
            log.warning(
                json.dumps(
                    {
                        "event": "default_refresh_rejected",
                        "model": self.model,
                        "tier": self.name,
                        "problem": problem,
                    }
                )
            )
            return False
        with self._lock:
            if self.pinned and not unpin:
                return False
            self._keep(value, "source")
        return True

    def problem(self, value: Any) -> str | None:
        """Why ``value`` may not be this default (the model's output check), or None."""
        problem = self._check.check(value)
        return None if problem is None else f"the new default fails the model's output check: {problem}"

    def adopt(self, state: DefaultState) -> bool:
        """Apply the default as the shared store has it (a person's pinned value, or the refresh that
        unpinned it), if newer than what this replica applied. True when the source must be read again."""
        if state.revision <= self.revision:
            return False
        self.revision = state.revision
        if not state.pinned:
            self.pinned, self.set_by = False, state.set_by
            return self._source is not None and self.origin == "operator"
        value = json.loads(state.value)
        if (problem := self.problem(value)) is not None:  # this replica's output check differs
            log.warning(json.dumps({"event": "default_not_adopted", "model": self.model, "problem": problem}))
            return False
        with self._lock:
            self.pinned, self.set_by = True, state.set_by
            self._keep(value, "operator", state.set_at)
        return False

    def _keep(self, value: Any, origin: str, at: float | None = None) -> None:
        """Answer with ``value`` from now on, and keep it on disk as the last good copy."""
        self.value, self.refreshed_at, self.origin = value, at or time.time(), origin
        try:
            write_atomic(
                self._cache_file, json.dumps({"value": value, "refreshed_at": self.refreshed_at}).encode()
            )
        except OSError as err:
            log.warning(
                json.dumps({"event": "default_cache_write_failed", "model": self.model, "error": str(err)})
            )

    def _load_cache(self) -> None:
        try:
            doc = json.loads(self._cache_file.read_text())
        except (OSError, ValueError):
            return
        if self._check.check(doc.get("value")) is None:
            self.value, self.refreshed_at, self.origin = doc["value"], doc.get("refreshed_at"), "cache"

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.refresh_s)
            if not self.pinned:
                await asyncio.to_thread(self.refresh)

    async def close(self) -> None:
        await stop(self._task)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "origin": self.origin,
            "refreshed_at": self.refreshed_at,
            "source": str(self._source) if self._source else None,
            "value": self.value,
            "pinned": self.pinned,
            "set_by": self.set_by,
        }
