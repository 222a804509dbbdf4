"""Durable state: the prediction log and shared model state, in SQLite (default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failsoft.store.base import (
    LogSink,
    ModelState,
    PredictionRow,
    StateEvent,
    Store,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)

__all__ = [
    "LogSink",
    "ModelState",
    "PredictionRow",
    "StateEvent",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "open_log",
    "open_store",
]


def open_store(url: str) -> Store:
    """A store for ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/db`` (not yet connected)."""
    if url.startswith(("postgresql://", "postgres://")):
        from failsoft.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        from failsoft.store.sqlite import SqliteStore

        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    raise StoreError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://...")


def open_log(url: str, stream: dict[str, Any] | None = None) -> LogSink:
    """Where the log writer writes: a store, or a NATS JetStream stream for ``nats://`` and ``tls://``
    (``stream``: the ``[store.stream]`` settings and the retention)."""
    if url.startswith(("nats://", "tls://")):
        from failsoft.store.stream import StreamLog

        return StreamLog(url, stream)
    return open_store(url)
