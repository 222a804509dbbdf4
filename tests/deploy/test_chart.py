"""deploy/helm/failsoft, checked offline: every values file in ci/ (and the defaults) rendered by a real
Helm, `helm lint --strict`, each rendering validated against Kubernetes 1.29, 1.30 and 1.34's schemas
(kubernetes-validate --strict) and by yamllint; values that cannot work fail with their messages; and the
rules a rendering must keep: probe paths the server answers, a grace period that covers the drain and the
log's flush, a disruption budget below the replicas, selectors that select the pods."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from failsoft.demo.procs import Proc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "failsoft"
VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBERNETES = ("1.29.0", "1.30.0", "1.34.0")
BIN = Path(sys.executable).parent


def helm() -> str:
    found = os.environ.get("FAILSOFT_HELM") or shutil.which("helm")
    cached = Path.home() / ".cache" / "failsoft" / "helm-4.1.4" / "helm"
    path = found or (str(cached) if cached.exists() else None)
    if path is None:
        why = "no helm binary: .ci/deploy fetches Helm's static binary (FAILSOFT_HELM names one)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "failsoft", str(CHART), "--namespace", "shop"]
    args += ["-f", str(values)] if values else []
    for s in sets:
        args += ["--set", s]
    done = run(helm(), *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("values", [None, *VALUES], ids=lambda v: v.stem if v else "defaults")
def test_lints_renders_and_validates(values: Path | None, tmp_path: Path) -> None:
    extra = ["-f", str(values)] if values else []
    lint = run(helm(), "lint", "--strict", str(CHART), *extra)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    done = run(helm(), "template", "failsoft", str(CHART), "--namespace", "shop", *extra)
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(done.stdout)
    rules = "line-length: {max: 160}, document-start: disable, indentation: {indent-sequences: whatever}"
    config = "{extends: default, rules: {" + rules + "}}"
    lint = run(str(BIN / "yamllint"), "-d", config, str(rendered))
    assert lint.returncode == 0, lint.stdout
    for version in KUBERNETES:
        check = run(str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(rendered))
        # the one kind without a schema there (a CRD's): ServiceMonitor, checked below
        said = [line for line in (check.stdout + check.stderr).splitlines() if "ServiceMonitor" not in line]
        assert check.returncode == 0 and not said, f"Kubernetes {version}: {check.stdout}{check.stderr}"


PG = ["store.kind=postgres", "store.postgres.existingSecret=db"]
NEGATIVE = {
    "sqlite-replicas": (["replicaCount=3"], "sqlite, which holds one replica's state; replicaCount is 3"),
    "sqlite-hpa": (["autoscaling.enabled=true"], "autoscaling.enabled would add replicas"),
    "postgres-no-secret": (["store.kind=postgres", "replicaCount=2"], "set store.postgres.existingSecret"),
    "short-grace": (
        ["drainSeconds=25", "terminationGracePeriodSeconds=30"],
        "(30) is shorter than preStopSeconds + drainSeconds + logFlushSeconds (35)",
    ),
    "pdb-blocks-drains": (
        [*PG, "replicaCount=2", "podDisruptionBudget.minAvailable=2"],
        "podDisruptionBudget.minAvailable (2) must be below the replica count (2)",
    ),
    "hpa-min-over-max": (
        [*PG, "autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=3"],
        "autoscaling.minReplicas (5) is more than autoscaling.maxReplicas (3)",
    ),
    "no-portfolio": (["portfolio="], "set portfolio"),
    "bad-workers": (["server.workers=many"], "'/server/workers': 'many' does not match pattern"),
    "unknown-key": (["replicas=3"], "additional properties 'replicas' not allowed"),
    "bad-store": (["store.kind=mysql"], "/store/kind"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_values_that_cannot_work_fail_with_their_message(case: str) -> None:
    sets, says = NEGATIVE[case]
    args = [helm(), "template", "failsoft", str(CHART)]
    for s in sets:
        args += ["--set", s]
    done = run(*args)
    assert done.returncode != 0 and says in done.stderr, done.stderr


def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return kinds(docs)["Deployment"]["spec"]["template"]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values", [None, *VALUES], ids=lambda v: v.stem if v else "defaults")
def test_the_rules_a_rendering_keeps(values: Path | None, stack: tuple[Proc, Proc]) -> None:
    docs = render(values)
    by = kinds(docs)
    deployment = by["Deployment"]
    spec = pod(docs)["spec"]
    (container,) = spec["containers"]
    labels = pod(docs)["metadata"]["labels"]
    # the probes ask what the server answers
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        with urllib.request.urlopen(stack[1].url + path, timeout=10) as r:
            assert r.status == 200, (probe, path)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # the grace period covers a pause, the drain and the flush
    pre = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    values_doc = yaml.safe_load(values.read_text()) if values else {}
    flush = values_doc.get("logFlushSeconds", 10)
    drain = float(env(container)["FAILSOFT_DRAIN_S"])
    assert spec["terminationGracePeriodSeconds"] >= int(pre[1]) + drain + flush
    # locked down
    assert (
        spec["securityContext"]["runAsNonRoot"]
        and spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    sc = container["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/etc/failsoft",
        "/var/lib/failsoft",
        "/tmp",
    }
    assert "checksum/portfolio" in pod(docs)["metadata"]["annotations"]
    # selectors select the pods
    for selector in (deployment["spec"]["selector"]["matchLabels"], by["Service"]["spec"]["selector"]):
        assert selector.items() <= labels.items()
    replicas = deployment["spec"].get("replicas")
    if "HorizontalPodAutoscaler" in by:
        hpa = by["HorizontalPodAutoscaler"]["spec"]
        assert replicas is None, "the autoscaler owns the replica count"
        assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        replicas = hpa["minReplicas"]
    if "PodDisruptionBudget" in by:
        pdb = by["PodDisruptionBudget"]["spec"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["minAvailable"] < replicas
    else:
        assert replicas == 1
    if env(container).get("FAILSOFT_STORE_URL") is None:  # SQLite: one replica, the old one gone first
        assert replicas == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    if "ServiceMonitor" in by:  # no schema in kubernetes-validate: its few fields checked here
        monitor = by["ServiceMonitor"]["spec"]
        assert monitor["selector"]["matchLabels"].items() <= by["Service"]["metadata"]["labels"].items()
        assert monitor["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    # the container runs the image's own command line, with the server's port
    assert container["args"][:2] == ["serve", "/etc/failsoft/portfolio.toml"]
    assert container["ports"][0]["containerPort"] == int(
        container["args"][container["args"].index("--port") + 1]
    )
