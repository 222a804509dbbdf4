"""Offline reports as self-contained pages: ``failsoft drift --html`` and ``failsoft leakage audit
--html`` write one HTML file each, plots drawn as inline SVG (no script, nothing fetched), readable
offline, printable, with every figure also in words for a screen reader."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from failsoft.durations import format_duration

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#1f1f1f}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
th{color:#5f6368}.ok,.pass{color:#0a7d27}.late{color:#1a73e8}.suspicious,.quality{color:#9a5b00}
.leak,.drift{color:#b3261e;font-weight:600}.note{color:#5f6368}.grid{display:flex;flex-wrap:wrap;gap:1em 2.5em}
figure{margin:0}figcaption{color:#5f6368;font-size:.9em;max-width:28em}"""

COLORS = ("#9aa0a6", "#1a73e8", "#b3261e", "#0a7d27")


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1>{body}</body></html>")  # fmt: skip


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def lines(
    series: dict[str, Sequence[float | None]],
    label: str,
    threshold: float | None = None,
    marks: Sequence[bool] = (),
    width: int = 420,
    height: int = 120,
) -> str:
    """Line chart of one or more series over the same x (chunks), with an optional dashed threshold and
    marked points (drifted chunks)."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    top = max([*values, threshold or 0.0, 1e-9]) * 1.1
    n = max((len(s) for s in series.values()), default=1)

    def x(i: int) -> float:
        return 30 + (i / max(1, n - 1)) * (width - 40)

    def y(v: float) -> float:
        return height - 18 - (v / top) * (height - 28)

    parts = [f'<line x1="30" y1="{height - 18}" x2="{width - 10}" y2="{height - 18}" stroke="#999"/>',
             f'<text x="2" y="{y(top / 1.1) + 4:.0f}" font-size="10">{top / 1.1:.3g}</text>',
             f'<text x="2" y="{height - 14}" font-size="10">0</text>']  # fmt: skip
    if threshold is not None:
        parts.append(f'<line x1="30" y1="{y(threshold):.1f}" x2="{width - 10}" y2="{y(threshold):.1f}" '
                     f'stroke="#b3261e" stroke-dasharray="4 3"><title>threshold {threshold}</title></line>')  # fmt: skip
    for k, (name, s) in enumerate(series.items()):
        pts = " ".join(
            f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s) if v is not None and math.isfinite(v)
        )
        color = COLORS[(k + 1) % len(COLORS)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"><title>{esc(name)}</title></polyline>')  # fmt: skip
    first = next(iter(series.values()), [])
    for i, marked in enumerate(marks):
        v = first[i] if i < len(first) else None
        if marked and v is not None:
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="#b3261e"><title>chunk {i}: drift</title></circle>')  # fmt: skip
    parts.append(f'<text x="30" y="{height - 3}" font-size="10">chunk 0</text>'
                 f'<text x="{width - 60}" y="{height - 3}" font-size="10">chunk {n - 1}</text>')  # fmt: skip
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
            f"{''.join(parts)}</svg>")  # fmt: skip


def bars(groups: Sequence[tuple[str, Sequence[float | None]]], names: Sequence[str], label: str,
         top: float | None = None, width: int = 420, height: int = 110) -> str:  # fmt: skip
    """Grouped bars: one group per label, one bar per name (a value of None draws nothing)."""
    values = [v for _, vs in groups for v in vs if v is not None]
    top = top or max([*values, 1e-9])
    gw = (width - 10) / max(1, len(groups))
    bw = max(2.0, gw / (len(names) + 1))
    parts = []
    for g, (glabel, vs) in enumerate(groups):
        for k, v in enumerate(vs):
            if v is None:
                continue
            h = (v / top) * (height - 28)
            parts.append(f'<rect x="{5 + g * gw + k * bw:.1f}" y="{height - 18 - h:.1f}" width="{bw - 1:.1f}" '
                         f'height="{h:.1f}" fill="{COLORS[k % len(COLORS)]}"><title>{esc(glabel)}, '
                         f"{esc(names[k])}: {v:.3g}</title></rect>")  # fmt: skip
        if len(groups) <= 12:
            parts.append(
                f'<text x="{5 + g * gw:.1f}" y="{height - 4}" font-size="10">{esc(glabel)[:14]}</text>'
            )
    legend = " · ".join(
        f'<tspan fill="{COLORS[k % len(COLORS)]}">■ {esc(n)}</tspan>' for k, n in enumerate(names)
    )
    return (f'<svg width="{width}" height="{height + 14}" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
            f'{"".join(parts)}<text x="5" y="{height + 10}" font-size="10">{legend}</text></svg>')  # fmt: skip


def drift_page(report: dict[str, Any], profile: str, data: str, min_psi: float) -> str:
    chunks = report["chunks"]
    features = list(chunks[0]["features"]) if chunks else []
    summary = (f"<p>{report['rows']} rows in {len(chunks)} chunks of {report['chunk_size']}; "
               f"<strong>{report['drifted_chunks']} drifted</strong>. A feature drifts in a chunk when a test is "
               f"significant after Holm's correction and its PSI is at least {min_psi}.</p>")  # fmt: skip
    rows = "".join(
        f"<tr><td>{c['chunk']}</td><td>{c['start']}–{c['end']}</td><td>{c['rows']}</td>"
        f"<td class={esc(c['verdict'])}>{esc(c['verdict'])}</td><td>{esc(', '.join(c['drifted']))}</td>"
        f"<td>{esc(', '.join(c['quality']))}</td></tr>"
        for c in chunks
    )
    table = ("<table><tr><th>chunk</th><th>rows</th><th>n</th><th>verdict</th><th>drifted</th>"
             f"<th>data quality</th></tr>{rows}</table>")  # fmt: skip
    figs = []
    for f in features:
        psi = [c["features"][f]["psi"] for c in chunks]
        marks = [f in c["drifted"] for c in chunks]
        words = f"{f}: PSI per chunk from {min(psi):.3f} to {max(psi):.3f}; drifted in {sum(marks)} of {len(chunks)}"
        figs.append(figure(lines({f"{f} PSI": psi}, words, min_psi, marks), words))
        last = chunks[-1]["features"][f].get("distribution")
        if last:
            groups = [(f"bin {i + 1}", [r, c]) for i, (r, c) in
                      enumerate(zip(last["reference"], last["current"], strict=False))]  # fmt: skip
            words = f"{f}: share per reference bin, reference against the last chunk"
            figs.append(figure(bars(groups, ["reference", "last chunk"], words), words))
    body = (f"<p class=note>{esc(data)} against the profile {esc(profile)}</p>{summary}"
            f"<h2>Per feature</h2><div class=grid>{''.join(figs)}</div><h2>Chunks</h2>{table}")  # fmt: skip
    return page("failsoft drift report", body)


def _lag(seconds: float | None) -> str:
    return "–" if seconds is None else format_duration(seconds)


def leakage_page(report: dict[str, Any]) -> str:
    feats = report["features"]
    summary = ", ".join(f"{v} {k}" for k, v in report["summary"].items())
    rows = "".join(
        f"<tr><td>{esc(f['table'])}</td><td>{esc(f['feature'])}</td><td class={esc(f['verdict'])}>"
        f"{esc(f['verdict'])}</td><td>{_lag(f['latency_s'].get('p50'))} / {_lag(f['latency_s'].get('p95'))} / "
        f"{_lag(f['latency_s'].get('max'))}</td><td>{f['would_leak_rate']:.1%}</td><td>{esc(f['reason'])}</td></tr>"
        for f in feats
    )
    table = ("<table><tr><th>table</th><th>feature</th><th>verdict</th><th>latency p50 / p95 / max</th>"
             f"<th>would leak</th><th>why</th></tr>{rows}</table>")  # fmt: skip
    power = [(f["feature"], [f["power"].get("naive_value"), f["power"].get("pit_value"),
                             f["power"].get("naive_null"), f["power"].get("pit_null")]) for f in feats]  # fmt: skip
    words = (
        "ROC AUC on the label of each feature's value and of its null indicator, naive join against "
        "point-in-time (0.5 is chance; no bar: nothing to score, a constant)"
    )
    figs = [figure(bars(power, ["value, naive", "value, point-in-time", "null, naive", "null, point-in-time"],
                        words, top=1.0, width=max(420, 90 * len(feats))), words)]  # fmt: skip
    for table_name, hist in (report.get("latency_hist") or {}).items():
        groups = [(b["label"], [float(b["rows"])]) for b in hist]
        words = f"table {table_name}: how late its rows landed (available_at - event_time), rows per span"
        figs.append(figure(bars(groups, ["rows"], words, width=480), words))
    split = report.get("split")
    split_html = ""
    if split and "verdict" in split:
        split_html = f"<h2>Train and test</h2><p class={esc(split['verdict'])}>{esc(split['reason'])}</p>"
    body = (f"<p><strong>{esc(summary)}</strong>. ok: every value used was there at prediction time; late: "
            "values land after their event, but the feature predicts as well either way; suspicious: "
            "evidence without proof; leak: the naive join's extra power comes from values not yet there."
            f"</p><div class=grid>{''.join(figs)}</div><h2>Per feature</h2>{table}{split_html}")  # fmt: skip
    return page("failsoft leakage audit", body)
