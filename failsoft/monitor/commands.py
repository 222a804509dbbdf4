"""``failsoft profile``, ``failsoft drift`` and ``failsoft estimate``: the command line of the monitor."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from failsoft.errors import ConfigError


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def _profile(args: argparse.Namespace) -> int:
    from failsoft import config
    from failsoft.monitor.offline import model_features, predict_with, profile_file
    from failsoft.monitor.profile import ProfileError, read_table

    try:
        features = args.features.split(",") if args.features else None
        computed = None
        if args.portfolio:
            spec = config.load(args.portfolio)
            if args.model is None:
                raise ProfileError("--portfolio needs --model NAME")
            features = features or model_features(spec, args.model)
            if not (args.prediction_column or args.score_column):
                computed = asyncio.run(predict_with(spec, args.model, read_table(args.data, features)))
        t = time.perf_counter()
        profile = profile_file(
            args.data, features, args.prediction_column, args.score_column, args.target_column,
            args.threshold, computed,
        )  # fmt: skip
        profile.save(args.out)
    except (ConfigError, ProfileError) as err:
        return _fail(err)
    kinds = ", ".join(f"{n} ({type(r).__name__.lower()})" for n, r in profile.features.items())
    print(f"{args.out}: {profile.rows} rows, {len(profile.features)} features: {kinds}")
    if profile.prediction is not None:
        print(f"predictions: {type(profile.prediction).__name__.lower()}")
    if profile.calibration is not None:
        calibrated = "isotonic map" if profile.calibration.x else "scores already calibrated"
        perf = ", ".join(f"{k} {v:.4f}" for k, v in profile.reference_performance.items())
        print(f"calibration: {calibrated}; reference performance: {perf}")
    print(f"built in {time.perf_counter() - t:.2f} s")
    return 0


def _verdict(v: str) -> str:
    color = {"ok": "green", "drift": "red", "quality": "yellow", "degraded": "red"}.get(v, "dim")
    return f"[{color}]{v}[/]"


def _drift(args: argparse.Namespace) -> int:
    from failsoft.config import DriftSpec
    from failsoft.monitor.offline import drift_file
    from failsoft.monitor.profile import Profile, ProfileError

    try:
        spec = DriftSpec(alpha=args.alpha, min_psi=args.min_psi, tests=args.tests.split(","))
        profile = Profile.load(args.profile)
        t = time.perf_counter()
        report = drift_file(profile, args.data, args.chunk_size, spec, args.prediction_column)
        report["seconds"] = round(time.perf_counter() - t, 3)
    except (ProfileError, TypeError, ValueError) as err:
        return _fail(err)
    if args.html:
        from failsoft.reports import drift_page

        Path(args.html).write_text(drift_page(report, args.profile, args.data, args.min_psi))
    if args.json:
        print(json.dumps(report))
    else:
        from rich.table import Table

        from failsoft.terminal import console

        t2 = Table(title=f"drift of {args.data} against {args.profile}")
        for col in ("chunk", "rows", "verdict", "drifted (PSI)", "data quality"):
            t2.add_column(col)
        for r in report["chunks"]:
            drifted = ", ".join(f"{f} ({r['features'][f]['psi']:.3f})" for f in r["drifted"])
            t2.add_row(
                f"{r['chunk']} [{r['start']}:{r['end']}]", str(r["rows"]), _verdict(r["verdict"]),
                drifted, ", ".join(r["quality"]),
            )  # fmt: skip
        console().print(t2)
        print(f"{report['drifted_chunks']} of {len(report['chunks'])} chunks drifted ({report['seconds']} s)")
    return 1 if args.fail_on_drift and report["drifted_chunks"] else 0


def _estimate(args: argparse.Namespace) -> int:
    from failsoft.monitor.offline import estimate_file
    from failsoft.monitor.profile import ProfileError

    try:
        report = estimate_file(
            args.reference, args.analysis, args.score_column, args.target_column, args.prediction_column,
            args.chunk_size, args.threshold, args.analysis_targets, args.id_column, args.max_drop,
        )  # fmt: skip
    except (ProfileError, KeyError) as err:
        return _fail(err)
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.table import Table

    from failsoft.terminal import console

    t = Table(title=f"estimated performance of {args.analysis}")
    for col in ("chunk", "rows", "est. ROC AUC", "real ROC AUC", "est. accuracy", "real accuracy",
                "est. F1", "real F1", "verdict"):  # fmt: skip
        t.add_column(col)

    def num(d: dict[str, Any] | None, k: str) -> str:
        return f"{d[k]:.4f}" if d and k in d else "-"

    for c in report["chunks"]:
        e, r = c["estimated"], c["realized"]
        t.add_row(
            str(c["chunk"]), str(c["rows"]), num(e, "roc_auc"), num(r, "roc_auc"),
            num(e, "accuracy"), num(r, "accuracy"), num(e, "f1"), num(r, "f1"), _verdict(c["verdict"]),
        )  # fmt: skip
    console().print(t)
    ref = report["reference"]
    print(f"reference ROC AUC {ref['roc_auc']:.4f}; {report['degraded_chunks']} chunks estimated more than "
          f"{report['max_drop']} below it")  # fmt: skip
    return 0


def add_commands(sub: Any) -> None:
    pf = sub.add_parser("profile", help="build a model's reference profile from training or reference data")
    pf.add_argument("data", help=".csv or .parquet")
    pf.add_argument("-o", "--out", required=True, help="the profile file to write (JSON)")
    pf.add_argument("--model", help="the model (with --portfolio: its inputs are the features)")
    pf.add_argument("--portfolio", help="portfolio.toml: features from the model's inputs, and predictions "
                    "computed by its first in-process tier when the data has none")  # fmt: skip
    pf.add_argument(
        "--features", help="comma-separated feature columns (default: every column but those below)"
    )
    pf.add_argument("--prediction-column", help="the model's prediction per row")
    pf.add_argument("--score-column", help="P(positive) per row, for a binary classifier")
    pf.add_argument("--target-column", help="the label (with --score-column: calibration for `estimate`)")
    pf.add_argument("--threshold", type=float, default=0.5, help="score at which the class is positive")
    pf.add_argument("--quiet", action="store_true", help="no progress line")
    pf.set_defaults(fn=_profile, progress=True)

    dr = sub.add_parser("drift", help="drift and data quality of a file against a profile, chunk by chunk")
    dr.add_argument("profile")
    dr.add_argument("data", help=".csv or .parquet, rows in time order")
    dr.add_argument("--chunk-size", type=int, default=10_000)
    dr.add_argument("--prediction-column", help="compare this column with the profile's predictions")
    dr.add_argument("--alpha", type=float, default=0.01, help="family-wise level per chunk (Holm)")
    dr.add_argument("--min-psi", type=float, default=0.1, help="PSI a significant drift must also reach")
    dr.add_argument("--tests", default="psi,ks,chi2")
    dr.add_argument("--fail-on-drift", action="store_true", help="exit code 1 when a chunk drifted")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--html", default=None, help="also write the report as a page with plots")
    dr.add_argument("--quiet", action="store_true", help="no progress line")
    dr.set_defaults(fn=_drift, progress=True)

    es = sub.add_parser("estimate", help="estimated performance of a binary classifier before labels (CBPE)")
    es.add_argument("--reference", required=True, help="labelled reference data with the model's scores")
    es.add_argument("--analysis", required=True, help="data to estimate on, rows in time order")
    es.add_argument("--score-column", required=True, help="P(positive) per row")
    es.add_argument("--target-column", required=True)
    es.add_argument("--prediction-column", help="predicted class per row (default: score >= threshold)")
    es.add_argument(
        "--analysis-targets", help="file of late targets for the analysis rows, joined on --id-column"
    )
    es.add_argument("--id-column", default="id")
    es.add_argument("--chunk-size", type=int, default=5000)
    es.add_argument("--threshold", type=float, default=0.5)
    es.add_argument("--max-drop", type=float, default=0.02, help="estimated ROC AUC drop that flags a chunk")
    es.add_argument("--json", action="store_true")
    es.add_argument("--quiet", action="store_true", help="no progress line")
    es.set_defaults(fn=_estimate, progress=True)
