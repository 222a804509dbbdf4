"""Tier backends: in-process Python/ONNX, remote OIP, plain JSON over HTTP,
Amazon SageMaker endpoints, and the safe default."""

from failsoft.tiers.base import Backend
from failsoft.tiers.defaults import DefaultBackend
from failsoft.tiers.http_json import HttpBackend
from failsoft.tiers.oip import OipBackend
from failsoft.tiers.python import PythonBackend
from failsoft.tiers.sagemaker import SageMakerBackend

__all__ = ["Backend", "DefaultBackend", "HttpBackend", "OipBackend", "PythonBackend", "SageMakerBackend"]
