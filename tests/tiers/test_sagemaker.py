"""The sagemaker tier through the real boto3 client, against a local server speaking SageMaker runtime's
wire protocol (``POST /endpoints/{name}/invocations``) that checks every request's SigV4 signature with
the test's secret, as AWS would."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from failsoft import Portfolio
from tests.portfolios import default_tier, model, write

KEY_ID, SECRET, REGION = "AKIDFAILSOFTTEST", "test-secret-key", "eu-west-1"
BREAKER = {"window": 20, "min_calls": 20}  # every test request reaches the endpoint


def signature_ok(method: str, path: str, headers: Any, body: bytes) -> str:
    """'' when the request carries a valid SigV4 signature by KEY_ID/SECRET for sagemaker in REGION;
    else what is wrong."""
    auth = headers.get("Authorization", "")
    m = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
        r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})",
        auth,
    )
    if m is None:
        return f"unsigned: {auth!r}"
    key_id, day, region, service, signed, signature = m.groups()
    if (key_id, region, service) != (KEY_ID, REGION, "sagemaker"):
        return f"credential scope {key_id}/{region}/{service}"
    canonical_headers = "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed.split(";"))
    canonical = "\n".join(
        [method, quote(path, safe="/~"), "", canonical_headers, signed, hashlib.sha256(body).hexdigest()]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", headers["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = ("AWS4" + SECRET).encode()
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return "" if hmac.compare_digest(expected, signature) else "signature does not match"


class Endpoint(ThreadingHTTPServer):
    """One SageMaker endpoint, ``churn-prod``: answers [P(0), P(1)] per row with P(1) = the first value /
    10; ``mode`` makes it hang, fail or refuse."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "ok"
        self.seen: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hung call: nothing to report


class Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        wrong = signature_ok("POST", self.path, self.headers, body)
        self.server.seen.append(
            {"path": self.path, "headers": dict(self.headers), "body": body, "wrong": wrong}
        )
        mode = self.server.mode
        if wrong:
            return self.reply(403, {"message": wrong}, "InvalidSignatureException")
        if self.path != "/endpoints/churn-prod/invocations":
            return self.reply(400, {"message": f"Endpoint {self.path} not found."}, "ValidationError")
        if mode == "hang":
            time.sleep(1.5)
        if mode == "fail":
            return self.reply(500, {"message": "the container crashed"}, "InternalFailure")
        if self.headers["Content-Type"] == "text/csv":
            rows = [[float(v) for v in line.split(",")] for line in body.decode().splitlines()]
        else:
            rows = json.loads(body)
            rows = rows["instances"] if isinstance(rows, dict) else rows
        answers = [[1 - r[0] / 10, r[0] / 10] for r in rows]
        if self.headers["Accept"] == "text/csv":
            data = "".join(f"{a},{b}\n" for a, b in answers).encode()
            return self.send(200, data, "text/csv")
        return self.send(200, json.dumps({"predictions": answers}).encode(), "application/json")

    def reply(self, status: int, doc: dict[str, Any], error: str) -> None:
        self.send(status, json.dumps(doc).encode(), "application/json", {"x-amzn-ErrorType": error})

    def send(self, status: int, data: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {"Content-Type": kind, "Content-Length": str(len(data)), **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Endpoint]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    server = Endpoint()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def portfolio(tmp_path: Path, server: Endpoint, **tier: Any) -> Path:
    sm = {"name": "sm", "kind": "sagemaker", "endpoint": "churn-prod", "region": REGION,
          "endpoint_url": server.url, "output_path": "predictions", "column": 1, "timeout_ms": 300,
          "breaker": BREAKER, **tier}  # fmt: skip
    m = model(sm, default_tier(0.5), inputs=("x", "y"), output={"type": "float", "min": 0, "max": 1},
              deadline_ms=1000)  # fmt: skip
    return write(tmp_path, {"churn": m}, store={"log_predictions": False})


@pytest.mark.parametrize(
    "tier",
    [
        {},
        {"body": {"instances": "$matrix"}, "variant": "blue"},
        {"content_type": "text/csv", "output_path": ""},
    ],
    ids=["json", "json-instances-variant", "csv"],
)
async def test_answers_through_boto3_with_signed_requests(
    endpoint: Endpoint, tmp_path: Path, tier: dict[str, Any]
) -> None:
    # boto3's first call (loading its service model) may pass 300 ms on a busy machine: this is about
    # what is sent and read, so the tier gets most of the deadline
    async with Portfolio.from_toml(portfolio(tmp_path, endpoint, **{"timeout_ms": 900, **tier})) as p:
        one = await p.predict("churn", {"x": 3, "y": 1})
        many = await p.predict("churn", [{"x": 1, "y": 0}, {"x": 9, "y": 0}])
    assert (one.tier, one.outputs, one.degraded) == ("sm", pytest.approx(0.3), False)
    assert (many.tier, many.outputs) == ("sm", pytest.approx([0.1, 0.9]))
    assert endpoint.seen and all(s["wrong"] == "" for s in endpoint.seen)
    headers = endpoint.seen[-1]["headers"]
    assert headers["Content-Type"] == tier.get("content_type", "application/json")
    assert headers.get("X-Amzn-SageMaker-Target-Variant") == tier.get("variant")
    if tier.get("content_type") == "text/csv":
        assert endpoint.seen[-1]["body"] == b"1,0\n9,0\n"


CRASHED = "InternalFailure: the container crashed"


@pytest.mark.parametrize(
    ("mode", "reason", "says", "timeout_ms", "within_s"),
    [
        # the tier's 100 ms and the default, well inside the 1 s deadline even on a busy machine
        ("hang", "timeout", "", 100, 1.0),
        # a failure is read as one however long boto3 takes to say so on a loaded machine (100 ms once
        # passed first); the answer still comes by the deadline
        ("fail", "error", f"HTTP 500 from endpoint churn-prod: {CRASHED}", 900, 2.0),
    ],
)
async def test_falls_back_when_the_endpoint_hangs_or_fails(
    endpoint: Endpoint, tmp_path: Path, mode: str, reason: str, says: str, timeout_ms: int, within_s: float
) -> None:
    endpoint.mode = mode
    async with Portfolio.from_toml(portfolio(tmp_path, endpoint, timeout_ms=timeout_ms)) as p:
        started = time.monotonic()
        out = await p.predict("churn", {"x": 3, "y": 1})
        took = time.monotonic() - started
    assert (out.tier, out.outputs, out.reason) == ("default", 0.5, reason)
    skip = out.skips[0]
    assert (skip.tier, skip.reason) == ("sm", reason) and says in skip.detail
    assert took < within_s


async def test_a_wrong_secret_or_endpoint_is_rejected_not_flaky(
    endpoint: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Portfolio.from_toml(portfolio(tmp_path, endpoint, endpoint="churn-typo")) as p:
        out = await p.predict("churn", {"x": 3, "y": 1})
    assert out.skips[0].reason == "rejected" and "Endpoint /endpoints/churn-typo" in out.skips[0].detail
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with Portfolio.from_toml(portfolio(tmp_path, endpoint)) as p:
        out = await p.predict("churn", {"x": 3, "y": 1})
    assert out.skips[0].reason == "rejected" and "signature does not match" in out.skips[0].detail
