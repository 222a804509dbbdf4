"""What the demo's traffic saw, counted as it goes, and the summary it ends with: the figures, and whether
the run kept the promise (every request answered, within its deadline, as the gateway measured it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table


@dataclass
class Stats:
    deadlines: dict[str, float]
    requests: int = 0
    non_2xx: int = 0
    degraded: int = 0
    over_deadline: int = 0  # as the client measured: its own scheduling and the round trip included
    gateway_over_deadline: int = 0  # as the gateway measured (each answer's latency_ms)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    phase: str = "starting"
    labels: int = 0

    def add(self, model: str, status: int, body: dict[str, Any] | None, latency_ms: float) -> None:
        self.requests += 1
        self.latencies.append(latency_ms)
        if latency_ms > self.deadlines[model]:
            self.over_deadline += 1
        if status >= 300 or body is None:
            self.non_2xx += 1
            return
        if body.get("latency_ms", 0.0) > self.deadlines[model]:
            self.gateway_over_deadline += 1
        self.by_tier[f"{model}/{body['tier']}"] += 1
        if body["degraded"]:
            self.degraded += 1
        for _tier, reason, *_ in body.get("skips", []):
            self.by_reason[reason] += 1

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies or [0.0])
        return {
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "degraded": self.degraded,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_tier": dict(sorted(self.by_tier.items())),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(lat.max()), 3),
            "over_deadline": self.over_deadline,
            "gateway_over_deadline": self.gateway_over_deadline,
            "labels_sent": self.labels,
        }


def verdict(s: dict[str, Any]) -> tuple[bool, str]:
    """Whether the demo showed what it promises, in one sentence that says why when it did not: an error
    answer, or an answer the gateway itself gave after its deadline, fails it; answers the client saw late
    while the gateway gave them in time are the machine's load, said with the figures that show it."""
    n, bad, late = s["requests"], s["non_2xx"], s["gateway_over_deadline"]
    load = s.get("load_average")
    machine = f"load average {load} on {s.get('cores')} cores" if load is not None else "a busy machine"
    lag = s.get("gateway_loop_lag_max_ms")
    if bad or late:
        why = []
        if bad:
            why.append(f"{bad} answers were errors")
        if late:
            why.append(f"the gateway gave {late} answers after their deadline (its event loop was late by up "
                       f"to {lag} ms; {machine})")  # fmt: skip
        return False, f"Verdict: not as promised: {'; '.join(why)}. See gateway.log in the data folder."
    said = (f"Verdict: all {n} requests answered, none with an error, every answer given within its "
            f"deadline by the gateway; {s['degraded']} came from a fallback, each saying which tier and "
            "why.")  # fmt: skip
    if s["over_deadline"]:
        said += (f" {s['over_deadline']} arrived late as this client measured (worst {s['max_ms']} ms): the "
                 f"client shares the machine ({machine}; the gateway's event loop woke up to {lag} ms late, "
                 "while the machine ran other work), so the delay was on the client's side.")  # fmt: skip
    return True, said


def print_summary(console: Console, s: dict[str, Any]) -> None:
    lag = s.get("gateway_loop_lag_max_ms")
    # how late the gateway's event loop woke at worst: while it waits for a core, no answer leaves
    late = ""
    if lag is not None:
        late = (f" (the gateway's event loop woke up to {lag} ms later than it asked, at worst: time this "
                "machine gave to other work, during which answers wait to leave)")  # fmt: skip
    console.print(
        f"\n[bold]{s['requests']} requests[/], [bold]{s['non_2xx']} non-2xx[/], {s['degraded']} degraded, "
        f"{s['over_deadline']} over deadline; latency p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
        f"max {s['max_ms']} ms{late}; "
        f"{s.get('logged_predictions', 0)} predictions in the log; "
        f"{s.get('audits_opened', 0)} audit items opened"
    )
    sh = s.get("shadow")
    if sh:
        ci = sh["ci95"]
        interval = f" (95% CI of the difference {ci[0]:+.3f} .. {ci[1]:+.3f})" if ci else ""
        aucs = (sh["auc_live"], sh["auc_candidate"])
        live, cand = (f"{x:.3f}" if isinstance(x, float) else "n/a" for x in aucs)
        console.print(
            f"shadow candidate [bold]{sh['candidate']}[/] of {sh['model']}: {sh['mirrored']} copies, "
            f"{sh['labelled_pairs']} labelled pairs, AUC live {live} vs candidate {cand}{interval}; "
            f"verdict: {sh['verdict']} "
            f"{'(failing: ' + ', '.join(sh['failing']) + ')' if sh['failing'] else ''}"
        )
    for model, m in s.get("monitor", {}).items():
        perf = ""
        if m["estimated"]:
            perf = f"; estimated AUC {m['estimated']['roc_auc']:.3f}"
        if m["realized"]:
            perf += f", realized AUC {m['realized'].get('roc_auc', float('nan')):.3f}"
        moves = " -> ".join(["live", *m["transitions"]]) if m["transitions"] else "stayed live"
        console.print(f"monitor of [bold]{model}[/]: {m['windows']} windows {m['verdicts']}; {moves}{perf}")
    tiers = Table(title="answered by", title_justify="left")
    tiers.add_column("model/tier")
    tiers.add_column("answers", justify="right")
    for k, v in s["by_tier"].items():
        tiers.add_row(k, str(v))
    reasons = Table(title="tiers skipped, by reason", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("skips", justify="right")
    for k, v in s["by_reason"].items():
        reasons.add_row(k, str(v))
    console.print(tiers, reasons)
