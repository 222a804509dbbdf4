"""The HTTP edge against a real `failsoft serve` and a real backend process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from tests.stack import FEATURES, Proc

ROW = {f: 0.5 * i for i, f in enumerate(FEATURES)}


def call(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def post(url: str, doc: Any) -> tuple[int, Any]:
    return call("POST", url, json.dumps(doc).encode())


@pytest.fixture(scope="module")
def gw(stack: tuple[Proc, Proc]) -> str:
    url = stack[1].url
    # The first call opens the gateway's connection to the backend; on a loaded machine that alone can
    # pass the heavy tier's 25 ms timeout, and these tests are about what a warm gateway answers.
    for _ in range(3):
        post(url + "/v1/models/churn/predict", {"inputs": ROW})
    return url


def test_health_and_server_metadata(gw: str) -> None:
    assert call("GET", gw + "/v2/health/live") == (200, {"live": True})
    assert call("GET", gw + "/v2/health/ready") == (200, {"ready": True})
    status, meta = call("GET", gw + "/v2")
    assert status == 200 and meta["name"] == "failsoft"


def test_model_metadata_lists_real_tensors(gw: str) -> None:
    status, meta = call("GET", gw + "/v2/models/churn")
    assert status == 200 and meta["name"] == "churn" and meta["versions"] == ["7"]
    assert [t["name"] for t in meta["inputs"]] == FEATURES
    assert meta["inputs"][0] == {"name": "f0", "datatype": "FP64", "shape": [-1]}
    assert meta["outputs"] == [{"name": "output", "datatype": "FP64", "shape": [-1]}]
    assert call("GET", gw + "/v2/models/churn/ready") == (200, {"name": "churn", "ready": True})
    assert call("GET", gw + "/v2/models/nope")[0] == 404


def test_v1_predict_single_and_batch(gw: str) -> None:
    status, out = post(gw + "/v1/models/churn/predict", {"inputs": ROW, "id": "req-1"})
    assert status == 200
    assert out["id"] == "req-1" and out["model"] == "churn" and out["version"] == "7"
    assert heavy_or_late(out)
    assert 0 <= out["outputs"] <= 1 and out["latency_ms"] > 0
    status, out = post(gw + "/v1/models/churn/predict", {"inputs": [ROW, ROW, ROW]})
    assert status == 200 and len(out["outputs"]) == 3 and heavy_or_late(out)
    # a client's X-Request-Id names the request when the body has no id (the body's id wins)
    for doc, said in (({"inputs": ROW}, "from-header"), ({"inputs": ROW, "id": "from-body"}, "from-body")):
        headers = {"content-type": "application/json", "x-request-id": "from-header"}
        req = urllib.request.Request(gw + "/v1/models/churn/predict", json.dumps(doc).encode(), headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["id"] == said


def heavy_or_late(out: dict[str, Any]) -> bool:
    """The heavy tier answered, undegraded; or, on a loaded machine, its niced backend missed the 25 ms
    timeout and the next tier answered, saying so."""
    if out["tier"] == "heavy":
        return out["degraded"] is False and out["reason"] is None
    return out["reason"] == "timeout" and out["skips"][0][:2] == ["heavy", "timeout"]


def test_oip_infer_feature_tensors_and_matrix(gw: str) -> None:
    per_feature = {
        "inputs": [{"name": f, "shape": [2], "datatype": "FP64", "data": [v, v]} for f, v in ROW.items()]
    }
    status, out = post(gw + "/v2/models/churn/infer", per_feature)
    assert status == 200 and out["outputs"][0]["shape"] == [2]
    assert out["parameters"]["failsoft_tier"] == "heavy" and out["parameters"]["failsoft_degraded"] is False
    matrix = {
        "id": "m1",
        "inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": [list(ROW.values())]}],
    }
    status, out2 = post(gw + "/v2/models/churn/infer", matrix)
    assert status == 200 and out2["id"] == "m1"
    assert out2["outputs"][0]["data"][0] == pytest.approx(out["outputs"][0]["data"][0])


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/models/churn/predict", b"{not json", 400, "not JSON"),
        ("/v1/models/churn/predict", b'{"rows": []}', 400, "inputs"),
        ("/v1/models/churn/predict", b'{"inputs": []}', 400, "empty"),
        ("/v1/models/churn/predict", json.dumps({"inputs": [ROW] * 65}).encode(), 400, "over the limit"),
        ("/v1/models/nope/predict", b'{"inputs": {}}', 404, "unknown model"),
        ("/v1/models/churn/predict", b'{"inputs": {"f0": "' + b"x" * 30000 + b'"}}', 413, "over"),
        (
            "/v2/models/churn/infer",
            json.dumps(
                {"inputs": [{"name": "f0", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}
            ).encode(),
            400,
            "shape",
        ),
        (
            "/v2/models/churn/infer",
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
            ).encode(),
            400,
            "6 features",
        ),
        ("/v2/models/churn/infer", b'{"inputs": "nope"}', 400, "malformed"),
    ],
)
def test_malformed_envelopes_get_a_clear_4xx(gw: str, path: str, body: bytes, status: int, says: str) -> None:
    got, out = call("POST", gw + path, body)
    assert got == status and says in out["error"]


def test_corrupt_values_get_the_default_not_an_error(gw: str) -> None:
    body = json.dumps({"inputs": {**ROW, "f1": float("nan")}}).encode()  # NaN, as Python writes it
    status, out = call("POST", gw + "/v1/models/churn/predict", body)
    assert status == 200 and out["tier"] == "base-rate" and out["reason"] == "invalid_input"
    assert out["outputs"] == 0.2 and "f1" in out["skips"][0][2]
    status, out = post(gw + "/v1/models/churn/predict", {"inputs": {**ROW, "f2": "oops"}})
    assert status == 200 and out["reason"] == "invalid_input"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/models/churn/predict", "POST"), ("GET", "/v2/models/churn/infer", "POST"),
     ("POST", "/v2/health/ready", "GET, HEAD"), ("GET", "/v1/models/churn/health", "POST"),
     ("DELETE", "/v1/audits", "GET, HEAD")],
)  # fmt: skip
def test_a_wrong_method_says_which_one_to_use(gw: str, method: str, path: str, allow: str) -> None:
    req = urllib.request.Request(gw + path, method=method, data=b"{}" if method == "POST" else None)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 405 and info.value.headers["allow"] == allow
    said = json.loads(info.value.read())["error"]
    assert said == f"{method} not allowed on {path}: use {allow.replace(', ', ' or ')}"
    assert call("GET", gw + "/nowhere")[0] == 404


def test_models_listing_and_metrics(gw: str) -> None:
    post(gw + "/v1/models/churn/predict", {"inputs": ROW})
    status, out = call("GET", gw + "/v1/models")
    model = out["models"][0]
    assert status == 200 and model["name"] == "churn"
    assert [t["name"] for t in model["chain"]] == ["heavy", "json", "cpu", "base-rate"]
    assert model["chain"][0]["breaker"]["state"] in {"closed", "half_open", "open"}
    assert model["chain"][2]["compiled"] is True
    status, text = call("GET", gw + "/metrics")
    assert status == 200
    assert 'failsoft_requests_total{model="churn",reason="none",tier="heavy"}' in text
    assert "failsoft_request_latency_seconds_bucket" in text and "failsoft_breaker_state" in text
    assert "failsoft_degraded_ratio" in text
    status, page = call("GET", gw + "/")
    assert status == 200 and "failsoft" in page


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_as_a_real_oip_client(gw: str, binary: bool) -> None:
    client = triton.InferenceServerClient(gw.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
        meta = client.get_model_metadata("churn")
        inputs = []
        for t in meta["inputs"]:
            inp = triton.InferInput(t["name"], [2], t["datatype"])
            inp.set_data_from_numpy(np.array([ROW[t["name"]]] * 2, dtype=np.float64), binary_data=binary)
            inputs.append(inp)
        result = client.infer(
            "churn", inputs, outputs=[triton.InferRequestedOutput("output", binary_data=binary)]
        )
        scores = result.as_numpy("output")
        assert scores is not None and scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
        params = result.get_response()["parameters"]
        assert params["failsoft_tier"] in {"heavy", "json", "cpu", "base-rate"}
    finally:
        client.close()


def test_monitor_endpoint_learns_then_judges_windows(gw: str) -> None:
    import time

    def send(n: int) -> None:
        for i in range(n):
            row = {f: 0.1 * ((i * (j + 3)) % 17) for j, f in enumerate(FEATURES)}
            assert post(gw + "/v1/models/churn/predict", {"inputs": row})[0] == 200

    send(220)
    end = time.monotonic() + 20
    while True:
        status, doc = call("GET", gw + "/v1/models/churn/monitor")
        assert status == 200 and doc["model"] == "churn"
        if doc["windows"] or time.monotonic() > end:
            break
        if doc["state"] == "watching":
            # the reference may have been learned from every row sent so far (a tick that came late):
            # a window of rows after it
            send(60)
        time.sleep(0.2)
    assert doc["state"] == "watching" and doc["profile"]["features"]["f0"] == "numeric"
    assert doc["policy"]["window_rows"] == 50 and doc["policy"]["action"] == "warn"
    window = doc["windows"][0]
    assert window["rows"] >= 50 and window["verdict"] in {"ok", "drift", "quality"}
    assert set(window["features"]) >= set(FEATURES) and "psi_critical" in window["features"]["f0"]
    assert call("GET", gw + "/v1/models/nope/monitor")[0] == 404


def test_answers_carry_their_length_and_versioned_infer_is_answered(gw: str) -> None:
    req = urllib.request.Request(
        gw + "/v2/models/churn/versions/1/infer",
        data=json.dumps(
            {"inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [ROW[f]]} for f in FEATURES]}
        ).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        raw = r.read()
        assert r.headers["content-length"] == str(len(raw)) and r.headers["transfer-encoding"] is None
    doc = json.loads(raw)
    assert doc["model_name"] == "churn" and doc["model_version"] == "7", "the current chain answers"


# ---- Open Inference Protocol conformance ---------------------------------------------------------------


def raw_call(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_compresses_requests_and_answers_with_gzip(gw: str, binary: bool) -> None:
    """tritonclient's request_compression_algorithm="gzip" was refused with a 400."""
    client = triton.InferenceServerClient(gw.removeprefix("http://"))
    try:
        rows = 64  # an answer big enough to be worth compressing
        inputs = []
        for t in client.get_model_metadata("churn")["inputs"]:
            inp = triton.InferInput(t["name"], [rows], t["datatype"])
            inp.set_data_from_numpy(np.array([ROW[t["name"]]] * rows, dtype=np.float64), binary_data=binary)
            inputs.append(inp)
        result = client.infer(
            "churn",
            inputs,
            outputs=[triton.InferRequestedOutput("output", binary_data=binary)],
            request_compression_algorithm="gzip",
            response_compression_algorithm="gzip",
        )
        scores = result.as_numpy("output")
        assert scores is not None and scores.shape == (rows,) and np.all((scores >= 0) & (scores <= 1))
    finally:
        client.close()


def test_compressed_bodies_are_bounded_and_checked(gw: str) -> None:
    import gzip

    url = gw + "/v1/models/churn/predict"
    doc = json.dumps({"inputs": ROW}).encode()
    status, body, _ = raw_call("POST", url, gzip.compress(doc), {"content-encoding": "gzip"})
    assert status == 200 and json.loads(body)["model"] == "churn"
    # 20,000 bytes is the stack's body limit: a small bomb that inflates past it is refused, not inflated
    bomb = gzip.compress(b'{"inputs": {"f0": 1, "pad": "' + b"a" * 5_000_000 + b'"}}')
    assert len(bomb) < 20_000
    status, body, _ = raw_call("POST", url, bomb, {"content-encoding": "gzip"})
    assert status == 413 and "over 20000 bytes" in json.loads(body)["error"]
    status, body, _ = raw_call("POST", url, b"not gzip at all", {"content-encoding": "gzip"})
    assert status == 400 and "not valid gzip" in json.loads(body)["error"]
    status, body, _ = raw_call("POST", url, doc, {"content-encoding": "br"})
    assert status == 400 and "send gzip, deflate or none" in json.loads(body)["error"]


def test_large_answers_are_gzipped_for_clients_that_accept_it(gw: str) -> None:
    import gzip

    url = gw + "/v1/models/churn/predict"
    many = json.dumps({"inputs": [ROW] * 64}).encode()
    status, body, headers = raw_call("POST", url, many, {"accept-encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))["outputs"]) == 64
    one = json.dumps({"inputs": ROW}).encode()
    status, body, headers = raw_call("POST", url, one, {"accept-encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] is None, "a small answer fits a packet as it is"
    status, body, headers = raw_call("POST", url, many, {})
    assert headers["content-encoding"] is None and len(json.loads(body)["outputs"]) == 64


def test_models_are_listed_and_requested_outputs_are_checked(gw: str) -> None:
    assert call("GET", gw + "/v2/models") == (200, {"models": ["churn"]})
    tensors = [{"name": f, "shape": [1], "datatype": "FP64", "data": [ROW[f]]} for f in FEATURES]
    ok = post(gw + "/v2/models/churn/infer", {"inputs": tensors, "outputs": [{"name": "output"}]})
    assert ok[0] == 200 and [o["name"] for o in ok[1]["outputs"]] == ["output"]
    status, doc = post(gw + "/v2/models/churn/infer", {"inputs": tensors, "outputs": [{"name": "probs"}]})
    assert status == 400 and "'probs'" in doc["error"] and "answers 'output'" in doc["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/churn/config"),
        ("GET", "/v2/models/churn/stats"),
        ("GET", "/v2/models/churn/versions/7/stats"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/churn/load"),
    ],
)
def test_triton_extension_routes_say_they_are_not_offered(gw: str, method: str, path: str) -> None:
    """They answered "unknown model 'models/churn/config'"."""
    status, doc = call(method, gw + path, b"{}" if method == "POST" else None)
    assert status == 501 and "does not offer" in doc["error"] and "GET /v2/models" in doc["error"]


def test_a_models_safe_default_for_clients_to_keep(gw: str) -> None:
    """What a client keeps as its own last resort: the gateway's safe default, with an ETag; asked again
    with it, a 304 without content (and without a Content-Length that would not be the 200's)."""
    import http.client

    host, port = gw.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/v1/models/churn/default")
    r = conn.getresponse()
    doc, etag = json.loads(r.read()), r.getheader("etag")
    assert r.status == 200 and etag and etag.startswith('"') and r.getheader("cache-control") == "no-cache"
    assert (doc["model"], doc["version"], doc["tier"], doc["value"]) == ("churn", "7", "base-rate", 0.2)
    assert {"origin", "pinned", "refreshed_at", "age_s"} <= set(doc)
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        conn.request("GET", "/v1/models/churn/default", headers={"if-none-match": given})
        r = conn.getresponse()
        assert (r.status, r.read(), r.getheader("etag")) == (304, b"", etag), given
        assert r.getheader("content-length") is None
    conn.request("GET", "/v1/models/churn/default", headers={"if-none-match": '"other"'})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["value"] == 0.2
    conn.close()
    assert call("GET", gw + "/v1/models/nope/default")[0] == 404
