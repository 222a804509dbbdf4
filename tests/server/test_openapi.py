"""GET /openapi.json: an OpenAPI 3.1 document made from the route table and the msgspec types the server
uses, valid by a real validator (openapi-spec-validator), naming every route, and good enough for a real
generator (openapi-python-client): the client it writes answers a prediction from a real gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate

from failsoft.server import app  # noqa: F401 (every route registered)
from failsoft.server.api import ROUTES
from failsoft.server.openapi import DATA_PLANE, document
from tests.http import get
from tests.stack import FEATURES, Proc

BIN = Path(sys.executable).parent


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document("1.2.3")
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == "1.2.3"


def test_every_route_is_in_it_with_its_body_and_its_token() -> None:
    paths = document("0")["paths"]
    for method, pattern, handler in ROUTES:
        op = paths["/" + "/".join(pattern)][method.lower()]
        assert op["operationId"] == handler.__name__
        assert ("security" in op) == handler.auth, op["operationId"]  # type: ignore[attr-defined]
        assert ("requestBody" in op) == (handler.body is not None), op["operationId"]  # type: ignore[attr-defined]
    for op in DATA_PLANE:
        assert op.operation == paths[op.path][op.method.lower()]["operationId"]
    predict = paths["/v1/models/{model}/predict"]["post"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Outcome"
    }
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }
    assert {"Outcome", "Skip", "Reason", "Error", "HealthChange", "Flip"} <= set(
        document("0")["components"]["schemas"]
    )


def test_a_generated_client_answers_a_prediction(stack: tuple[Proc, Proc], tmp_path: Path) -> None:
    served = get(stack[1].url + "/openapi.json")
    assert served.status_code == 200
    (tmp_path / "openapi.json").write_bytes(served.content)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hooks
    gen = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json",
                          "--output-path", "fsclient", "--meta", "none"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert gen.returncode == 0 and "Warning" not in gen.stdout, gen.stdout + gen.stderr
    script = f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
from fsclient import Client
from fsclient.api.data_plane import predict
from fsclient.models import PredictRequest, Outcome
client = Client(base_url={stack[1].url!r}, timeout=10)
body = PredictRequest.from_dict({{"inputs": {dict.fromkeys(FEATURES, 0.1)!r}, "id": "gen-1"}})
out = predict.sync(model="churn", client=client, body=body)
assert isinstance(out, Outcome), out
print(json.dumps({{"id": out.id, "model": out.model, "tier": out.tier, "outputs": out.outputs}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["id"] == "gen-1" and answer["model"] == "churn" and 0 <= answer["outputs"] <= 1
