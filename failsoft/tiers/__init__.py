"""Tier backends: in-process Python/ONNX, remote OIP, plain JSON over HTTP,
Amazon SageMaker endpoints, and the safe default.

Each is imported when first named: a worker process of a ``run = "process"`` tier, which needs only the
Python backend, does not pay for the remote tiers' HTTP client (aiohttp) at every start."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failsoft.tiers.base import Backend
    from failsoft.tiers.defaults import DefaultBackend
    from failsoft.tiers.http_json import HttpBackend
    from failsoft.tiers.oip import OipBackend
    from failsoft.tiers.python import PythonBackend
    from failsoft.tiers.sagemaker import SageMakerBackend

__all__ = ["Backend", "DefaultBackend", "HttpBackend", "OipBackend", "PythonBackend", "SageMakerBackend"]
_HOMES = {"Backend": "base", "DefaultBackend": "defaults", "HttpBackend": "http_json", "OipBackend": "oip",
          "PythonBackend": "python", "SageMakerBackend": "sagemaker"}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'failsoft.tiers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"failsoft.tiers.{home}"), name)
