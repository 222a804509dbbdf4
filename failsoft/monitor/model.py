"""One model's monitor: the open window the request path appends to, the judged windows kept for their
reports and for joining labels, and the verdict that moves the model's health (``failsoft.monitor.online``
runs them)."""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from failsoft.chain import Answer
from failsoft.config import MonitorSpec, OutputSpec
from failsoft.monitor.judge import Sample, columns, round_nan
from failsoft.monitor.performance import realized
from failsoft.monitor.profile import PREDICTION, Column, Profile, build
from failsoft.types import Health

log = logging.getLogger("failsoft.monitor")


def task_of(spec: MonitorSpec, output: OutputSpec) -> str:
    if spec.task != "auto":
        return spec.task
    if output.type in {"list", "vector"}:
        return "ranking"
    if output.type in {"int", "string"}:
        return "multiclass"
    lo, hi = output.min, output.max
    if output.type == "float" and lo is not None and hi is not None and lo >= 0 and hi <= 1:
        return "binary"
    return "regression"


@dataclass
class Window:
    """An open window. What the requests left is kept in forms the garbage collector does not walk (float
    matrices, strings, floats), not the requests' own objects: a busy model holds a thousand requests
    here, and each full collection would go through all of them."""

    started_at: float
    started: float  # monotonic
    # numeric models: the rows so far, copied into one float buffer (grown by doubling)
    buf: Any = None
    rows_seen: list[dict[str, Any]] = field(default_factory=list)  # the rows themselves (other models)
    preds: list[Any] = field(default_factory=list)  # per row, the primary's answer or None
    answered: dict[str, Any] = field(default_factory=dict)  # request id -> the primary's answer(s)
    batches: set[str] = field(default_factory=set)  # request ids answered with several rows
    labels: dict[str, Any] = field(default_factory=dict)  # labels that came while the window was open
    names: tuple[str, ...] = ()
    requests: int = 0
    rows: int = 0
    invalid: int = 0
    seen_before: int = 0  # the monitor's count of requests seen (kept or not) when the window opened

    def grow(self, rows: int, width: int) -> Any:
        size = max(rows, 2 * len(self.buf) if self.buf is not None else 1024)
        buf = np.empty((size, width))
        if self.buf is not None:
            buf[: self.rows] = self.buf[: self.rows]
        self.buf = buf
        return buf

    def merge(self, other: Window) -> None:
        if other.buf is not None:
            mine = self.buf[: self.rows] if self.buf is not None else np.empty((0, other.buf.shape[1]))
            self.buf = np.vstack([mine, other.buf[: other.rows]])
        self.rows_seen += other.rows_seen
        self.preds += other.preds
        self.names = self.names or other.names
        self.rows += other.rows


@dataclass
class Closed:
    """A judged window kept for its report and for joining labels to its answers."""

    report: dict[str, Any]
    # request id -> the primary's answer: the value itself for a one-row request (a float is not tracked by
    # the garbage collector: a hundred kept windows add no work to its collections), the rows' list for
    # a batch (in ``batches``)
    answered: dict[str, Any]
    batches: set[str] = field(default_factory=set)
    labels: dict[str, Any] = field(default_factory=dict)


class ModelMonitor:
    def __init__(
        self,
        model: str,
        spec: MonitorSpec,
        features: dict[str, str],
        output: OutputSpec,
        profile: Profile | None,
        learned_path: Path,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.features = features  # name -> "numeric" | "categorical"
        self.all_numeric = all(kind == "numeric" for kind in features.values())
        self.task = task_of(spec, output)
        self.profile = profile
        self.learned_path = learned_path
        # a window this far past window_rows is not being judged (the monitor fell behind): drop, count
        self.max_rows = 10 * spec.window_rows + spec.learn_rows
        self.dropped = 0
        # Sampling (``max_rows_per_s``): every request counts in ``seen``; ``_skip`` requests are passed by
        # before the next one is kept, drawn so that each request is kept with chance ``share``.
        self.seen = 0
        self.share = 1.0
        self._skip = 0
        self._log_pass = 0.0  # log(1 - share)
        self._rng = random.Random(seed)
        self._rate_at = time.monotonic()
        self._rate_seen = 0
        self.window = Window(time.time(), time.monotonic())
        self.learning: list[Window] = []
        self.history: collections.deque[Closed] = collections.deque(maxlen=spec.keep_windows)
        self.windows = 0
        self.settled = 0  # windows whose health change (if any) is made
        self.verdicts: collections.Counter[str] = collections.Counter()
        self.bad = 0  # drifted windows in a row
        self.bad_since = 0.0  # when the first of them opened (wall clock)
        self.good = 0  # clean windows in a row
        self.transitions: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.last_health = Health.LIVE

    # ---- the request path ----------------------------------------------------------------------------

    def observe(self, answer: Answer) -> None:
        """The chain's listener: called after each answer, never blocks. What is kept goes straight into
        the open window in forms the garbage collector does not walk (holding the request's own objects
        until a background pass would make every young-generation collection walk a thousand requests).
        Past ``max_rows_per_s``, most requests leave here after two integer operations (sampling)."""
        self.seen += 1
        if self._skip:
            self._skip -= 1
            return
        if self.share < 1.0:
            # requests passed by before the next one kept: geometric, so each is kept with chance ``share``
            self._skip = int(math.log(1.0 - self._rng.random()) / self._log_pass)
        w = self.window
        batch, outputs, request_id = answer.batch, answer.primary, answer.outcome.id
        if batch is None:
            w.invalid += 1
            return
        if w.rows >= self.max_rows:
            self.dropped += 1
            return
        n = len(batch)
        if self.all_numeric:
            end = w.rows + n
            buf = w.buf
            if buf is None or end > len(buf):
                buf = w.grow(end, len(batch.names))
                w.names = batch.names
            batch.copy_into(buf, w.rows)
        else:
            w.rows_seen += batch.rows
        w.requests += 1
        w.rows += n
        if outputs is None:
            w.preds += [None] * n
        elif n == 1:
            w.preds.append(outputs[0])
            w.answered[request_id] = outputs[0]
        else:
            w.preds += outputs
            w.answered[request_id] = outputs
            w.batches.add(request_id)

    # ---- the background side -------------------------------------------------------------------------

    def resample(self, now: float) -> None:
        """Once a second: the chance a request is kept, from the rows a second seen since the last look
        (requests a second times the rows a kept request has had in this window, or one)."""
        elapsed = now - self._rate_at
        if elapsed < 1.0:
            return
        requests = (self.seen - self._rate_seen) / elapsed
        self._rate_at, self._rate_seen = now, self.seen
        w = self.window
        rows = requests * max(w.rows / w.requests, 1.0) if w.requests else requests
        cap = self.spec.max_rows_per_s
        share = 1.0 if not cap or rows <= cap else cap / rows
        self.share = share
        if share < 1.0:
            self._log_pass = math.log1p(-share)
        else:
            self._skip = 0

    def due(self, now: float) -> bool:
        w, spec = self.window, self.spec
        if self.profile is None:
            return w.rows >= min(spec.learn_rows, spec.window_rows)
        return w.rows >= spec.window_rows or (now - w.started >= spec.window_s and w.rows >= spec.min_rows)

    def take(self) -> Window:
        w, self.window = self.window, Window(time.time(), time.monotonic(), seen_before=self.seen)
        w.seen_before = self.seen - w.seen_before  # from here on: the requests seen while it was open
        return w

    def sample(self, w: Window) -> Sample:
        matrix = (w.buf[: w.rows] if w.buf is not None else np.empty((0, 0))) if self.all_numeric else None
        return Sample(self.features, self.task, w.names, matrix, w.rows_seen, w.preds, w.invalid)

    def columns(self, w: Window) -> dict[str, Column]:
        return columns(self.sample(w))

    def learn(self, w: Window) -> bool:
        """Fold a window into the reference being learned; True once the profile is built (and saved)."""
        self.learning.append(w)
        if sum(x.rows for x in self.learning) < self.spec.learn_rows:
            return False
        merged = Window(self.learning[0].started_at, self.learning[0].started)
        for x in self.learning:
            merged.merge(x)
        cols = self.columns(merged)
        profile = build(
            cols,
            list(self.features),
            prediction=PREDICTION if PREDICTION in cols else None,
            source=f"first {merged.rows} live requests",
        )
        profile.save(self.learned_path)
        self.profile = profile  # only once it is on disk: a restart finds what is being used
        self.learning = []
        log.warning(json.dumps({"event": "profile_learned", "model": self.model, "rows": self.profile.rows,
                                "path": str(self.learned_path)}))  # fmt: skip
        return True

    def closed(self, w: Window, judged: dict[str, Any]) -> Closed:
        """A window judged (``failsoft.monitor.judge.report``, in the judging process): its report completed
        with what only the serving process knows, kept with its answers."""
        judged.update(
            {
                "window": self.windows,
                "started_at": w.started_at,
                "ended_at": time.time(),
                "requests": w.requests + w.invalid,
                # the share of the model's requests the window kept (1.0 below max_rows_per_s)
                "kept_share": round_nan((w.requests + w.invalid) / max(w.seen_before, 1)),
                "invalid": w.invalid,
                "answered_by_primary": sum(p is not None for p in w.preds),
                "labelled": 0,
                "realized": None,
            }
        )
        closed = Closed(judged, w.answered, w.batches)
        if w.labels:
            self._realize(closed, w.labels)
        return closed

    def verdict(self, closed: Closed, health: Health, by_monitor: bool = True) -> tuple[Health, str] | None:
        """Count the window against the policy; the health to move to (and why), if any. When someone
        else changed the health since the last window (a person restored the model, say), the counts in
        a row start again."""
        r, spec = closed.report, self.spec
        if health is not self.last_health and not by_monitor:
            self.bad = self.good = 0
        self.last_health = health
        self.windows += 1
        self.verdicts[r["verdict"]] += 1
        self.history.append(closed)
        if r["verdict"] == "too_small":
            return None
        if r["verdict"] in {"drift", "quality"}:
            self.bad, self.good = self.bad + 1, 0
            if self.bad == 1:
                self.bad_since = r["started_at"]
            span = r["ended_at"] - self.bad_since
            what = ", ".join(r["drifted"] + r["quality"])
            why = f"{r['verdict']} in {self.bad} window(s) in a row over {span:.0f} s: {what}"
            quarantine = spec.action == "quarantine" and self.bad >= spec.quarantine_after
            if quarantine and span >= spec.min_span_s:
                if health is not Health.QUARANTINED:
                    return Health.QUARANTINED, why
            elif quarantine and health is Health.LIVE:  # enough windows, not yet enough time
                return Health.WARNING, f"{why} (quarantined once it lasts {spec.min_span_s:g} s)"
            elif self.bad >= spec.warn_after and health is Health.LIVE:
                return Health.WARNING, why
            return None
        self.good, self.bad = self.good + 1, 0
        if self.good >= spec.recover_after:
            if health is Health.WARNING:
                return Health.LIVE, f"{self.good} clean windows in a row"
            if health is Health.QUARANTINED and spec.recovery == "auto":
                return Health.LIVE, f"{self.good} clean windows in a row"
        return None

    # ---- labels ---------------------------------------------------------------------------------------

    def add_labels(self, found: dict[str, Any]) -> None:
        """Labels received since the last look (a correction replaces the earlier label): joined to the
        kept windows' answers, and held for the open window's."""
        open_w = self.window
        open_w.labels.update({rid: y for rid, y in found.items() if rid in open_w.answered})
        for c in self.history:
            new = {rid: y for rid, y in found.items() if rid in c.answered}
            if new:
                self._realize(c, new)

    def _realize(self, c: Closed, new: dict[str, Any]) -> None:
        c.labels.update(new)
        ys, outs = [], []
        for rid, label in c.labels.items():
            out = c.answered[rid] if rid in c.batches else [c.answered[rid]]
            labels = label if isinstance(label, list) and len(out) > 1 else [label]
            if len(labels) != len(out):
                continue
            for y, o in zip(labels, out, strict=True):
                if y is None or o is None:
                    continue
                if self.task in {"binary", "regression"} and not isinstance(y, int | float):
                    continue
                ys.append(y)
                outs.append(o)
        c.report["labelled"] = len(ys)
        try:
            perf = realized(self.task, ys, outs, self.spec.threshold, self.spec.k)
        except (TypeError, ValueError):
            perf = {}
        c.report["realized"] = {k: round_nan(v) for k, v in perf.items()} or None

    # ---- reading ---------------------------------------------------------------------------------------

    def describe(self, health: Health, reason: str, last: int = 20) -> MonitorReport:
        return MonitorReport(
            model=self.model,
            health=str(health),
            health_reason=reason,
            task=self.task,
            state="learning" if self.profile is None else "watching",
            profile=self.profile.summary() if self.profile else None,
            policy=msgspec.to_builtins(self.spec),
            windows_judged=self.windows,
            verdicts=dict(self.verdicts),
            drifted_in_a_row=self.bad,
            clean_in_a_row=self.good,
            dropped=self.dropped,
            kept_share=round_nan(self.share),
            open_window=OpenWindow(self.window.rows, round(time.monotonic() - self.window.started, 1)),
            transitions=list(self.transitions),
            windows=[c.report for c in list(self.history)[-last:]][::-1],
        )


class OpenWindow(msgspec.Struct, frozen=True):
    rows: int
    age_s: float


class MonitorReport(msgspec.Struct, frozen=True):
    """A monitored model as ``GET /v1/models/{m}/monitor`` shows it. Each window's report is the drift
    evaluation's own document (per feature: statistics, thresholds, verdicts; estimated and realized
    performance), newest first."""

    model: str
    health: str
    health_reason: str
    task: str
    state: str  # learning | watching
    profile: dict[str, Any] | None
    policy: dict[str, Any]
    windows_judged: int
    verdicts: dict[str, int]
    drifted_in_a_row: int
    clean_in_a_row: int
    dropped: int
    kept_share: float  # the chance a request is kept now (below 1 past ``max_rows_per_s``)
    open_window: OpenWindow
    transitions: list[dict[str, Any]]
    windows: list[dict[str, Any]]
