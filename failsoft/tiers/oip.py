"""A remote Open Inference Protocol (KServe v2) endpoint: Triton, KServe, MLServer, Ray Serve.

The rows go as one tensor ``[n, n_features]`` (``input_mode = "tensor"``) or one tensor per feature
(``"features"``), with the tier's request ``parameters``; the answer is read from ``output_name`` (else the
first output), one entry per row, and with ``column`` that column of each row (a classifier's ``[n, 2]``
probabilities: ``column = 1``). A 4xx is ``rejected``: the request is wrong for the engine.
"""

from __future__ import annotations

from typing import Any

from failsoft.config import OipTierSpec
from failsoft.errors import InvalidOutput
from failsoft.tiers.remote import RemoteBackend
from failsoft.types import TierKind
from failsoft.validation import Batch

_DT = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def split_rows(output: dict[str, Any], n: int) -> list[Any]:
    """An OIP output tensor as one value (scalar or list) per row."""
    try:
        data = output["data"]
        shape = [int(s) for s in output["shape"]]
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidOutput(f"output tensor lacks data or shape: {err}") from None
    if not isinstance(data, list) or not shape or shape[0] != n:
        raise InvalidOutput(f"output shape {shape} does not match {n} input rows")
    width = 1
    for s in shape[1:]:
        width *= s
    if len(data) != n * width:
        raise InvalidOutput(f"output has {len(data)} values for shape {shape}")
    if len(shape) == 1 or (width == 1 and len(shape) == 2 and shape[1] == 1):
        return data
    return [data[i * width : (i + 1) * width] for i in range(n)]


class OipBackend(RemoteBackend):
    kind = TierKind.OIP

    def __init__(self, spec: OipTierSpec, feature_types: dict[str, str]) -> None:
        super().__init__(spec.name, spec.pool_size)
        self.spec = spec
        base = spec.url.rstrip("/")
        version = f"/versions/{spec.model_version}" if spec.model_version else ""
        self.url = f"{base}/v2/models/{spec.model_name}{version}/infer"
        self._types = feature_types

    def request_body(self, batch: Batch, request_id: str) -> dict[str, Any]:
        n = len(batch)
        if self.spec.input_mode == "tensor":
            flat = batch.matrix().ravel().tolist()
            inputs = [
                {
                    "name": self.spec.input_name,
                    "shape": [n, len(batch.names)],
                    "datatype": self.spec.datatype,
                    "data": flat,
                }
            ]
        else:
            inputs = [
                {
                    "name": f,
                    "shape": [n],
                    "datatype": _DT.get(self._types.get(f, "float"), "FP64"),
                    "data": [row.get(f) for row in batch.rows],
                }
                for f in batch.names
            ]
        body: dict[str, Any] = {"id": request_id, "inputs": inputs}
        if self.spec.parameters:
            body["parameters"] = self.spec.parameters
        if self.spec.output_name:
            body["outputs"] = [{"name": self.spec.output_name}]
        return body

    async def call(self, batch: Batch, request_id: str) -> list[Any]:
        reply = await self.post_json(self.url, self.request_body(batch, request_id))
        outputs = reply.get("outputs") if isinstance(reply, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise InvalidOutput("response has no outputs")
        want = self.spec.output_name
        chosen = (
            next((o for o in outputs if isinstance(o, dict) and o.get("name") == want), None)
            if want
            else outputs[0]
        )
        if not isinstance(chosen, dict):
            names = [o.get("name") for o in outputs if isinstance(o, dict)]
            raise InvalidOutput(f"response has no output named {want!r}; it has {names}")
        rows = split_rows(chosen, len(batch))
        column = self.spec.column
        if column is None:
            return rows
        try:
            return [row[column] for row in rows]
        except (TypeError, IndexError):
            shape = chosen.get("shape")
            raise InvalidOutput(
                f"column {column} of output {chosen.get('name')!r} (shape {shape}) does not exist"
            ) from None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url}
