"""Hostile and odd input at a real gateway: every bad envelope is a 4xx in the JSON error shape, nothing a
client sends stops the log, and the connection guard bounds what one client can hold."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_api import call, post
from tests.stack import FEATURES, Proc

ROW = {f: 0.1 * i for i, f in enumerate(FEATURES)}
DEEP = b"[" * 1000 + b"]" * 1000


@pytest.fixture(scope="module")
def gw(stack: tuple[Proc, Proc]) -> str:
    return stack[1].url


@pytest.fixture(scope="module")
def token(models_dir: Path, gw: str) -> str:
    return (models_dir / "state" / "admin-token").read_text().strip()


def authed(method: str, url: str, body: bytes, token: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=body, method=method,
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw(gw: str, data: bytes, read_s: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection; what the server answers before it closes (or read_s)."""
    host, port = gw.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_s) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def status_and_json(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), response[:300]
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "path", ["/v1/models/churn/predict", "/v2/models/churn/infer"]
)  # fmt: skip
def test_deep_nesting_is_a_400(gw: str, path: str) -> None:
    for body in (DEEP, b'{"inputs": ' + DEEP + b"}", b'{"inputs": {"f0": ' + DEEP + b"}}"):
        status, doc = call("POST", gw + path, body)
        assert status in (200, 400), (status, doc)
        assert status == 200 or "error" in doc
    # and with NaN, which takes the lenient decoder
    status, doc = call("POST", gw + path, b'{"x": NaN, "inputs": ' + DEEP + b"}")
    assert status == 400 and "error" in doc


def test_deep_labels_are_a_400(gw: str, token: str) -> None:
    status, doc = authed("POST", gw + "/v1/labels", DEEP, token)
    assert status == 400 and "error" in doc


def test_surrogate_and_nul_ids_never_stop_the_log(gw: str) -> None:
    url = gw + "/v1/models/churn/predict"
    bad_ids = [b'"\\ud800"', b'"a\\udfffb"', b'"\\u0000"', b'"tab\\there"', b'"' + b"x" * 300 + b'"']
    for raw_id in bad_ids:
        for extra in (b"", b', "nan": NaN'):
            body = b'{"id": ' + raw_id + b', "inputs": ' + json.dumps(ROW).encode() + extra + b"}"
            status, doc = call("POST", url, body)
            assert status in (200, 400), (raw_id, status, doc)
            if status == 200:
                assert "\ufffd" in doc["id"]  # made safe, not refused
            else:
                assert "printable" in doc["error"]
    # the log is still alive: a fresh answer shows up among the written records
    before = _written(gw)
    for _ in range(5):
        assert post(url, {"inputs": ROW})[0] == 200
    deadline = time.monotonic() + 20
    while _written(gw) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _written(gw) >= before + 5
    assert _metric(gw, "failsoft_log_flusher_errors_total") == 0


def _metrics(gw: str) -> str:
    status, text = call("GET", gw + "/metrics")
    assert status == 200
    return str(text)


def _metric(gw: str, name: str) -> float:
    for line in _metrics(gw).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}")


def _written(gw: str) -> float:
    for line in _metrics(gw).splitlines():
        if line.startswith('failsoft_log_records_total{outcome="written"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    "path", ["/v1/audits/99999999999999999999999", "/v1/audits/%C2%B2", "/v1/audits/-1", "/v1/audits/1.5"]
)
def test_odd_audit_ids_are_404(gw: str, path: str) -> None:
    status, doc = call("GET", gw + path)
    assert status == 404 and "error" in doc


def test_surrogates_in_control_plane_text_are_made_safe(gw: str, token: str) -> None:
    body = b'{"health": "live", "reason": "ok \\ud800 \\u0000", "x": NaN}'
    status, doc = authed("POST", gw + "/v1/models/churn/health", body, token)
    assert status == 200, doc
    assert doc["reason"] == "ok \ufffd \ufffd"


def test_encoded_slash_is_part_of_the_name(gw: str) -> None:
    status, doc = call("POST", gw + "/v1/models/x%2Fpredict", json.dumps({"inputs": ROW}).encode())
    assert status in (404, 405) and "error" in doc
    status, doc = call("POST", gw + "/v1/models/churn%2Fpredict", json.dumps({"inputs": ROW}).encode())
    assert status in (404, 405) and "error" in doc


def test_parser_errors_get_the_json_shape(gw: str) -> None:
    status, doc = status_and_json(raw(gw, b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 400 and "malformed HTTP request" in doc["error"]
    bad_length = b"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"
    status, doc = status_and_json(raw(gw, bad_length))
    assert status == 400 and "error" in doc


def test_oversize_head_and_too_many_headers_are_431(gw: str) -> None:
    big = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    status, doc = status_and_json(raw(gw, big))
    assert status == 431 and "bytes" in doc["error"]
    many = b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    status, doc = status_and_json(raw(gw, many))
    assert status == 431 and "headers" in doc["error"]
    # the server still answers everyone else
    assert call("GET", gw + "/v2/health/live")[0] == 200


def test_oversize_tensors_are_refused_from_their_shape(gw: str) -> None:
    """A 1 MiB INT8 binary tensor (524k rows) cost 0.5-0.9 s of event loop before its 400."""
    import urllib.error
    import urllib.request

    n = 19_000  # under the test gateway's 20,000-byte body limit, far over its 64-row batch limit
    tensor = {"name": "input", "shape": [n, 1], "datatype": "INT8", "parameters": {"binary_data_size": n}}
    header = json.dumps({"inputs": [tensor]}).encode()
    req = urllib.request.Request(
        gw + "/v2/models/churn/infer", data=header + b"\x00" * n, method="POST",
        headers={"inference-header-content-length": str(len(header))},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    assert "batch of 19000 rows is over the limit of 64" in json.loads(info.value.read())["error"]
    # a JSON tensor whose shape understates its data is refused too, and so is a lying binary size
    liar = {"name": "input", "shape": [1, 6], "datatype": "FP64", "data": [0] * 3000}
    status, doc = post(gw + "/v2/models/churn/infer", {"inputs": [liar]})
    assert status == 400 and "does not hold" in doc["error"]
    liar = {"name": "input", "shape": [2, 6], "datatype": "FP64", "parameters": {"binary_data_size": 5}}
    status, doc = post(gw + "/v2/models/churn/infer", {"inputs": [liar]})
    assert status == 400 and "binary_data_size" in doc["error"]


def test_backend_urls_only_for_token_holders(gw: str, token: str) -> None:
    status, doc = call("GET", gw + "/v1/models")
    assert status == 200
    assert all("url" not in t for m in doc["models"] for t in m["chain"])
    status, one = call("GET", gw + "/v1/models/churn")
    assert status == 200 and all("url" not in t for t in one["chain"])
    import urllib.request

    req = urllib.request.Request(gw + "/v1/models", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        doc = json.loads(r.read())
    assert any(t.get("url", "").startswith("http://127.0.0.1") for m in doc["models"] for t in m["chain"])


def test_failsoft_health_goes_through_the_control_plane(
    gw: str, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It wrote the store directly, with no token, and only from the folder holding portfolio.toml."""
    from failsoft.cli import main

    assert main(["health", "churn", "warning", "--reason", "checking", "--url", gw, "--token", "wrong"]) == 1
    said = capsys.readouterr().err
    assert f"gateway: {gw} (--url)" in said and "HTTP 401: this gateway does not know the token sent" in said
    assert "FAILSOFT_ADMIN_TOKEN or --token" in said and "<data_dir>/admin-token" in said, said
    assert main(["health", "churn", "warning", "--reason", "checking", "--url", gw, f"--token={token}"]) == 0
    assert "churn: warning" in capsys.readouterr().out
    assert call("GET", gw + "/v1/models/churn")[1]["health"] == "warning"
    assert main(["health", "churn", "live", "--url", gw, f"--token={token}"]) == 0
    events = call("GET", gw + "/v1/models/churn/events")[1]["events"]
    assert any(e["actor"] == "admin" and e["reason"] == "checking" for e in events), "the token's owner"
    for e in events:  # a time a person can read beside the epoch
        assert e["at"].endswith("+00:00") and e["at"][:4] == str(time.gmtime(e["ts"]).tm_year)


def test_whoami_names_a_tokens_owner(gw: str, token: str) -> None:
    """The console and the command line check a token here before acting with it."""
    assert authed("GET", gw + "/v1/whoami", b"", token) == (200, {"owner": "admin"})
    status, doc = authed("GET", gw + "/v1/whoami", b"", "not-a-token-of-this-gateway")
    assert status == 401 and "Bearer" in doc["error"]
