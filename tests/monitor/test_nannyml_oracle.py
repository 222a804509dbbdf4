"""NannyML's synthetic car-loan dataset (bundled in its wheel) and NannyML itself as the oracle: the
features NannyML sees drifting in the second half of the analysis period are the ones failsoft flags there
(and failsoft flags nothing in the first half), and failsoft's estimated ROC AUC per chunk is within 0.02
of NannyML's CBPE estimate and of the realized ROC AUC."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from failsoft.cli import main
from failsoft.config import DriftSpec
from failsoft.monitor.offline import drift_file, estimate_file, profile_file

os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # NannyML reports usage over the network unless told not to

FEATURES = ["car_value", "salary_range", "debt_to_income_ratio", "loan_length", "repaid_loan_on_prev_car",
            "size_of_downpayment", "driver_tenure"]  # fmt: skip
CHUNK = 5000


def _data() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nannyml")
    assert spec is not None and spec.origin is not None, "nannyml is a test dependency"
    return Path(spec.origin).parent / "datasets" / "data"


DATA = _data()
REFERENCE = DATA / "synthetic_car_loan_reference.csv"
ANALYSIS = DATA / "synthetic_car_loan_analysis.csv"
TARGETS = DATA / "synthetic_car_loan_analysis_target.csv"


@pytest.fixture(scope="module")
def nannyml_results() -> dict[str, Any]:
    import nannyml as nml
    import pandas as pd

    ref, ana = pd.read_csv(REFERENCE), pd.read_csv(ANALYSIS)
    drift = nml.UnivariateDriftCalculator(
        column_names=FEATURES, continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
        categorical_methods=["chi2", "jensen_shannon"], chunk_size=CHUNK,
    ).fit(ref).calculate(ana).filter(period="analysis").to_df()  # fmt: skip
    alerts = [
        {f for f in FEATURES if all(bool(drift.loc[i, (f, m, "alert")]) for m in _methods(drift, f))}
        for i in range(len(drift))
    ]
    cbpe = nml.CBPE(
        y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="repaid", metrics=["roc_auc"],
        chunk_size=CHUNK, problem_type="classification_binary",
    ).fit(ref)  # fmt: skip
    estimated = cbpe.estimate(ana).filter(period="analysis").to_df()[("roc_auc", "value")].to_numpy()
    return {"alerts": alerts, "roc_auc": estimated}


def _methods(df: Any, feature: str) -> list[str]:
    return sorted({c[1] for c in df.columns if c[0] == feature and c[-1] == "alert"})


def test_drift_flags_what_nannyml_flags_in_the_second_half(
    tmp_path: Path, nannyml_results: dict[str, Any]
) -> None:
    profile = profile_file(REFERENCE, FEATURES, score="y_pred_proba", target="repaid")
    report = drift_file(profile, ANALYSIS, CHUNK, DriftSpec(), prediction="y_pred_proba")
    chunks = report["chunks"]
    assert len(chunks) == 10 == len(nannyml_results["alerts"])
    for ours, theirs in zip(chunks[:5], nannyml_results["alerts"][:5], strict=True):
        assert ours["verdict"] == "ok" and ours["drifted"] == [] and theirs == set()
    for ours, theirs in zip(chunks[5:], nannyml_results["alerts"][5:], strict=True):
        assert ours["verdict"] == "drift"
        assert set(ours["drifted"]) - {"prediction"} == theirs
    assert theirs == {"car_value", "salary_range", "loan_length", "repaid_loan_on_prev_car"}


def test_estimated_roc_auc_matches_nannyml_cbpe_and_the_realized(nannyml_results: dict[str, Any]) -> None:
    report = estimate_file(
        REFERENCE, ANALYSIS, "y_pred_proba", "repaid", "y_pred", CHUNK, targets=TARGETS, id_column="id"
    )
    ours = np.array([c["estimated"]["roc_auc"] for c in report["chunks"]])
    realized = np.array([c["realized"]["roc_auc"] for c in report["chunks"]])
    assert all(c["labelled"] == CHUNK for c in report["chunks"])
    assert np.abs(ours - nannyml_results["roc_auc"]).max() < 0.02
    assert np.abs(ours - realized).max() < 0.02
    # the drop in the second half is seen before any label arrives
    assert ours[5:].mean() < ours[:5].mean() - 0.005


def test_cli_profile_drift_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "car.json"
    assert main(["profile", str(REFERENCE), "-o", str(out), "--features", ",".join(FEATURES),
                 "--score-column", "y_pred_proba", "--target-column", "repaid"]) == 0  # fmt: skip
    assert "7 features" in capsys.readouterr().out
    assert main(["drift", str(out), str(ANALYSIS), "--chunk-size", "5000", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["drifted_chunks"] == 5 and [c["verdict"] for c in doc["chunks"]][4:6] == ["ok", "drift"]
    page = tmp_path / "drift.html"
    assert main(["drift", str(out), str(ANALYSIS), "--chunk-size", "5000", "--fail-on-drift", "--html",
                 str(page)]) == 1  # fmt: skip
    assert "5 of 10 chunks drifted" in capsys.readouterr().out
    text = page.read_text()  # a page of its own: plots inline, nothing fetched, no script
    assert text.count("<svg") >= 2 * len(FEATURES) and "<strong>5 drifted</strong>" in text
    assert "<script" not in text and "src=" not in text and "href=" not in text
    assert main(["estimate", "--reference", str(REFERENCE), "--analysis", str(ANALYSIS),
                 "--analysis-targets", str(TARGETS), "--score-column", "y_pred_proba",
                 "--target-column", "repaid", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibrated"] and len(doc["chunks"]) == 10 and doc["chunks"][0]["realized"]["roc_auc"] > 0.9
    # errors name the problem and exit 2
    assert main(["drift", str(out), str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["profile", str(REFERENCE), "-o", str(out), "--features", "car_value,nope"]) == 2
    assert "no column nope" in capsys.readouterr().err
