"""Open Inference Protocol v2 (KServe v2) request and response shapes for a failsoft model."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from failsoft.chain import Chain
from failsoft.errors import InvalidRequest
from failsoft.types import Outcome


class Tensor(msgspec.Struct):
    # data is absent when the tensor travels as binary after the JSON header

    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct):
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] | None = None


# The binary tensor extension (Triton's clients use it by default): raw little-endian tensors after the
# JSON header, whose length is sent in the Inference-Header-Content-Length header.
_NP = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "<i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "<u1",
    "BOOL": "?",
}


def _bytes_elements(raw: bytes) -> list[str]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InvalidRequest("truncated BYTES tensor")
        n = int.from_bytes(raw[i : i + 4], "little")
        out.append(raw[i + 4 : i + 4 + n].decode("utf-8", "replace"))
        i += 4 + n
    return out


def check_size(req: InferRequest, max_rows: int, n_features: int) -> None:
    """Refuse a request over the batch limit from its declared shapes alone, before any value is read: an
    oversize request costs what reading it costs, not what building its rows would."""
    limit = max_rows * max(n_features, 1)
    for t in req.inputs:
        if not t.shape:
            raise InvalidRequest(f"tensor {t.name!r}: shape is empty")
        if t.shape[0] > max_rows:
            raise InvalidRequest(f"batch of {t.shape[0]} rows is over the limit of {max_rows}")
        size = _size(t.shape)
        if size > limit:
            raise InvalidRequest(f"tensor {t.name!r}: shape {t.shape} holds over {limit} values")
        declared = (t.parameters or {}).get("binary_data_size")
        width = np.dtype(_NP[t.datatype]).itemsize if t.datatype in _NP else None
        if declared is not None and width is not None and declared != size * width:
            raise InvalidRequest(
                f"tensor {t.name!r}: binary_data_size {declared!r} is not {size} {t.datatype} values"
            )


def attach_binary(req: InferRequest, binary: bytes) -> None:
    """Fill ``data`` of the inputs whose values came as raw bytes after the JSON header."""
    offset = 0
    for t in req.inputs:
        size = (t.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidRequest(f"tensor {t.name!r}: binary_data_size {size!r} exceeds the body")
        raw = binary[offset : offset + size]
        offset += size
        if t.datatype == "BYTES":
            t.data = _bytes_elements(raw)
        elif t.datatype in _NP:
            try:
                t.data = np.frombuffer(raw, dtype=_NP[t.datatype]).tolist()
            except ValueError as err:
                raise InvalidRequest(f"tensor {t.name!r}: {err}") from None
        else:
            raise InvalidRequest(f"tensor {t.name!r}: unsupported datatype {t.datatype}")


OUTPUT = "output"  # the one output a failsoft model answers with


def check_outputs(req: InferRequest) -> None:
    """Requested outputs must be ones the model serves: a 400 naming what it serves, not a silent answer
    without them."""
    names = [o.get("name") for o in req.outputs or ()]
    unknown = [n for n in names if n != OUTPUT]
    if unknown:
        raise InvalidRequest(
            f"requested outputs {', '.join(map(repr, unknown))} are not served; this model answers {OUTPUT!r}"
        )


def wants_binary(req: InferRequest) -> bool:
    if req.outputs:
        return any((o.get("parameters") or {}).get("binary_data") for o in req.outputs)
    return bool((req.parameters or {}).get("binary_data_output"))


def binary_response(doc: dict[str, Any]) -> tuple[bytes, int]:
    """The response with its output tensors as raw bytes after the JSON; returns (body, header length)."""
    chunks = []
    for out in doc["outputs"]:
        data = out.pop("data")
        if out["datatype"] == "BYTES":
            raw = b"".join(len(b := str(x).encode()).to_bytes(4, "little") + b for x in data)
        else:
            raw = np.asarray(data, dtype=_NP[out["datatype"]]).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        chunks.append(raw)
    header = msgspec.json.encode(doc)
    return header + b"".join(chunks), len(header)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidRequest("tensor data must be a list")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for d in data:
            flat.extend(_flatten(d))
        return flat
    return data


def _size(shape: list[int]) -> int:
    n = 1
    for s in shape:
        if s < 0:
            raise InvalidRequest(f"tensor shape {shape} has a negative dimension")
        n *= s
    return n


def to_rows(req: InferRequest, chain: Chain) -> list[dict[str, Any]]:
    """Input tensors as rows: one tensor per feature ([n] or [n, 1]), or one [n, n_features] tensor."""
    if not req.inputs:
        raise InvalidRequest("inputs is empty: send one tensor per feature or one [rows, features] tensor")
    names = chain.schema.names
    tensors = []
    for t in req.inputs:
        if isinstance(t.data, list) and t.shape and len(t.data) not in (t.shape[0], _size(t.shape)):
            raise InvalidRequest(f"tensor {t.name!r}: shape {t.shape} does not hold {len(t.data)} values")
        data = _flatten(t.data)
        if not t.shape or len(data) != _size(t.shape):
            raise InvalidRequest(f"tensor {t.name!r}: shape {t.shape} does not hold {len(data)} values")
        tensors.append((t, data))
    if len(tensors) == 1 and names and len(tensors[0][0].shape) == 2 and tensors[0][0].name not in names:
        t, data = tensors[0]
        n, width = t.shape
        if width != len(names):
            raise InvalidRequest(
                f"tensor {t.name!r} has {width} columns; model {chain.model!r} takes "
                f"{len(names)} features: {', '.join(names)}"
            )
        return [dict(zip(names, data[i * width : (i + 1) * width], strict=True)) for i in range(n)]
    n = tensors[0][0].shape[0]
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for t, data in tensors:
        if t.shape[0] != n or _size(t.shape) != n:
            raise InvalidRequest(
                f"tensor {t.name!r}: shape {t.shape}; every feature tensor must be [{n}] or [{n}, 1]"
            )
        if names and t.name not in names:
            raise InvalidRequest(f"unknown input {t.name!r}; model {chain.model!r} takes {', '.join(names)}")
        for row, v in zip(rows, data, strict=True):
            row[t.name] = v
    return rows


def _datatype(v: Any) -> str:
    if isinstance(v, bool):
        return "BOOL"
    if isinstance(v, int):
        return "INT64"
    if isinstance(v, float):
        return "FP64"
    return "BYTES"


def to_response(outcome: Outcome, n: int, single: bool) -> dict[str, Any]:
    values = [outcome.outputs] if single else outcome.outputs
    first = values[0] if values else None
    if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in values):
        data = [x for v in values for x in v]
        shape = [n, len(first)]
        dtype = _datatype(first[0]) if first else "BYTES"
    else:
        data, shape, dtype = values, [n], _datatype(first)
    if dtype == "BYTES":
        data = [x if isinstance(x, str) else msgspec.json.encode(x).decode() for x in data]
    parameters = {
        "failsoft_tier": outcome.tier,
        "failsoft_degraded": outcome.degraded,
        "failsoft_reason": str(outcome.reason) if outcome.reason else "",
        "failsoft_latency_ms": round(outcome.latency_ms, 3),
    }
    if outcome.warnings:
        parameters["failsoft_warnings"] = "; ".join(outcome.warnings)
    return {
        "model_name": outcome.model,
        "model_version": outcome.version,
        "id": outcome.id,
        "parameters": parameters,
        "outputs": [{"name": "output", "datatype": dtype, "shape": shape, "data": data}],
    }


def output_metadata(chain: Chain) -> list[dict[str, Any]]:
    kind = chain.output_spec.type
    dtype = {"float": "FP64", "int": "INT64", "string": "BYTES"}.get(kind, "BYTES")
    shape = [-1, -1] if kind in {"list", "vector"} else [-1]
    return [{"name": "output", "datatype": "FP64" if kind == "vector" else dtype, "shape": shape}]


def model_metadata(chain: Chain) -> dict[str, Any]:
    return {
        "name": chain.model,
        "versions": [chain.version],
        "platform": "failsoft",
        "inputs": chain.schema.tensor_metadata(),
        "outputs": output_metadata(chain),
        "parameters": {
            "tiers": [t.name for t in chain.tiers] + [chain.default.name],
            "deadline_ms": chain.deadline_s * 1000,
        },
    }
