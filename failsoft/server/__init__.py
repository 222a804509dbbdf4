"""The HTTP edge: Open Inference Protocol v2, the JSON API, /metrics. Errors become status codes here only."""

from failsoft.server.app import App

__all__ = ["App"]
