"""Answers waiting to be logged: an O(1) append on the request path, taken out as encoded batches.

A batch is one JSON document, ``{"prefix": P, "base": B, "rows": [...]}``; the database names each row
"P-(B + position)", so a batch sent twice (a replay, a restarted writer) is recognised record by record.
A record may also stand for several requests answered in one call (a shadow candidate's batch): its
request id and outputs are then lists, one item per request, and it is kept as one shadow call (see
``split`` and store/base.py). Neither the serving process nor the writer pays per request for it.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any

import msgspec

from failsoft.store.base import PredictionRow
from failsoft.store.journal import Journal
from failsoft.text import scrub


def _fallback(obj: Any) -> Any:
    """Outputs of user models may hold numpy values or other objects: keep what they say."""
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


_encode = msgspec.json.Encoder(enc_hook=_fallback).encode
_json = msgspec.json.Encoder().encode


class RecordQueue:
    def __init__(
        self,
        max_buffer: int,
        log_inputs: bool,
        on_batch_ready: Callable[[], object] | None = None,
        batch_size: int = 1000,
    ) -> None:
        self.max_buffer = max_buffer
        # whether the records made for this queue carry their inputs (the listener that makes them reads it)
        self.log_inputs = log_inputs
        self.batch_size = batch_size
        # Called (from the request path) once a full batch is waiting; must be cheap.
        self.on_batch_ready = on_batch_ready
        # Records sent to a writer but not yet acknowledged count against the bound too.
        self.held_elsewhere = 0
        self.dropped = 0
        # Batches in which some value had to be made safe to encode (see ``_safe``).
        self.normalised = 0
        self._queue: collections.deque[PredictionRow] = collections.deque()
        self.prefix = os.urandom(6).hex()
        self._next_id = 1  # the number of the next record taken
        self._appended = 0  # records queued so far (the last one's number)
        # Where each record is also written before the answer is sent ([store] journal); see journal.py.
        self.journal: Journal | None = None

    @property
    def next_taken(self) -> int:
        """The number of the oldest record still queued here (every record below it has been taken)."""
        return self._next_id

    def _journal(self, journal: Journal, record: PredictionRow) -> None:
        n = self._appended
        try:
            line = _encode([n, *msgspec.structs.astuple(record)])
        except Exception:
            line = _encode([n, *_safe(record)])
        journal.write(line + b"\n")

    def __len__(self) -> int:
        return len(self._queue)

    def append(self, record: PredictionRow) -> None:
        """Queue one record: an answer, or a shadow call's answers to several requests (counted as that
        many when dropped). O(1), never blocks, never raises."""
        queue = self._queue
        if len(queue) + self.held_elsewhere >= self.max_buffer:
            ids = record.request_id
            self.dropped += len(ids) if isinstance(ids, list) else 1
            return
        queue.append(record)
        self._appended += 1
        if self.journal is not None:
            self._journal(self.journal, record)
        if len(queue) == self.batch_size and self.on_batch_ready is not None:
            self.on_batch_ready()

    def take(self) -> tuple[bytes, int]:
        """Up to batch_size records as one encoded batch (one C call: cheap under the GIL). Never raises:
        a value no JSON can hold is logged in a safe form (see ``_safe``)."""
        popleft = self._queue.popleft
        batch = [popleft() for _ in range(min(len(self._queue), self.batch_size))]
        base, self._next_id = self._next_id, self._next_id + len(batch)
        if self.journal is not None:
            self.journal.mark(base, len(batch))
        doc = {"prefix": self.prefix, "base": base, "rows": batch}
        try:
            return _encode(doc), len(batch)
        except Exception:
            self.normalised += 1
            doc["rows"] = [_safe(r) for r in batch]
            return _encode(doc), len(batch)


def one_each(outputs: list[Any]) -> Any:
    """``[[a], [b], ...]`` for a call's answers ``[a, b, ...]``, one row per request: a shadow call's
    outputs as its record keeps them (item i answers request i). Encoded here in one call, as
    ``msgspec.Raw``, when no answer's JSON holds a comma (numbers, one-key objects: then the commas are
    the separators); building a list per request and encoding each later cost the request path more than
    the candidate's arithmetic. Otherwise (or when an answer cannot be encoded) the lists themselves."""
    if outputs:
        try:
            text = _encode(outputs)
        except Exception:
            pass
        else:
            if text.count(b",") == len(outputs) - 1:
                return msgspec.Raw(b"[[" + text[1:-1].replace(b",", b"],[") + b"]]")
    return [[v] for v in outputs]


def _safe(record: PredictionRow) -> Any:
    """A record as it can be logged: strings scrubbed of what no encoder or store takes (a lone surrogate,
    NUL), and a value no JSON can hold at all (too deep, circular) kept as its text."""
    try:
        _encode(record)
        return record
    except Exception:
        pass
    out = []
    for value in msgspec.structs.astuple(record):
        if isinstance(value, msgspec.Raw):  # JSON already (see one_each)
            out.append(value)
            continue
        try:
            clean = scrub(msgspec.to_builtins(value, enc_hook=_fallback))
            _encode(clean)
        except Exception:
            clean = scrub(repr(value)[:10_000])
        out.append(clean)
    return out


class _Record(msgspec.Struct, array_like=True):
    """A record as the writer reads it: outputs and inputs left as the JSON they came as."""

    record_id: str | None
    request_id: str | list[str]
    model: str
    version: str
    tier: str
    role: str
    degraded: bool
    reason: str | None
    outputs: msgspec.Raw
    inputs: msgspec.Raw
    latency_ms: float
    ts: float


class _Batch(msgspec.Struct):
    prefix: str
    base: int
    rows: list[_Record]


_read_batch = msgspec.json.Decoder(_Batch).decode
_NULL = msgspec.Raw(b"null")


def read(payload: bytes) -> tuple[str, int, list[_Record]]:
    """An encoded batch's id prefix, base number and records (outputs and inputs as the JSON they came as).
    A batch the typed reading refuses (a request id that is no string, from a caller of the Python API) is
    read the generic way."""
    try:
        batch = _read_batch(payload)
        return batch.prefix, int(batch.base), batch.rows
    except msgspec.ValidationError:
        doc = msgspec.json.decode(payload)
        return doc["prefix"], int(doc["base"]), [_generic(r) for r in doc["rows"]]


def split(payload: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """An encoded batch as rows to insert, record ids filled in: live prediction rows
    (``PREDICTION_COLUMNS``; outputs and inputs as ``msgspec.Raw``, the JSON they came as, inputs None when
    not logged) and shadow calls (``SHADOW_CALL_COLUMNS``; request ids and outputs as the JSON text both
    stores keep): the records standing for several requests, and any single record with role "shadow".
    Answers are never made into Python values and encoded again (reading 1,000 live records beside two
    candidates' calls: 2.1-2.3 -> 1.1-1.2 µs a record)."""
    prefix, base, records = read(payload)
    rows, calls = [], []
    for k, r in enumerate(records):
        record_id = r.record_id or f"{prefix}-{base + k}"
        ids = r.request_id
        if isinstance(ids, list) or r.role == "shadow":  # a single shadow answer: a call for one request
            outputs = str(r.outputs, "utf-8")
            if not isinstance(ids, list):
                ids, outputs = [ids], f"[{outputs}]"
            text = (_json(ids).decode(), outputs)
            calls.append((record_id, r.model, r.version, r.tier, r.reason, *text, r.latency_ms, r.ts))
        else:
            inputs = None if r.inputs == _NULL else r.inputs
            rows.append((record_id, ids, r.model, r.version, r.tier, r.role, r.degraded, r.reason, r.outputs,
                         inputs, r.latency_ms, r.ts))  # fmt: skip
    return rows, calls


def _generic(row: list[Any]) -> _Record:
    """A record read as plain JSON values (it did not fit ``_Record``), in its shape."""
    values: list[Any] = [msgspec.Raw(_encode(v)) if i in (8, 9) else v for i, v in enumerate(row)]
    return _Record(*values)
