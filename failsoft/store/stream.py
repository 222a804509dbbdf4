"""The prediction log on a stream: every answer published to NATS JetStream as a CloudEvents 1.0 event.

``[store] log = "nats://host:4222"`` puts this sink in the log writer's process in place of the database
(store/log.py drives it as it drives the SQLite and PostgreSQL stores): the same record, the same
guarantees. A batch the serving process sent is published while the writer waits for JetStream's
acknowledgements (up to ``max_pending`` messages unacknowledged at once, none on the request path); when the
broker is away the batch goes to the spill file, and is published again, with the same message ids, once
it is back. JetStream drops a message whose ``Nats-Msg-Id`` it already holds within the stream's duplicate
window, so a replay, a restarted writer or a recovered journal puts each record in the stream once.

Each answer is one CloudEvent (structured mode): ``id`` the request id (a shadow candidate's call, which
answers several requests: its record id), ``source`` ``failsoft/MODEL``, ``type`` ``io.failsoft.prediction``
or ``io.failsoft.shadow``, ``subject`` the model, ``time`` when it was answered, and the log's record as
``data``. Two ways to carry them (``[store.stream] events``):

- ``"batch"`` (default): a batch as one message holding a JSON array of events (the CloudEvents JSON batch
  format, ``application/cloudevents-batch+json``) on ``SUBJECT.batch``, its id ``PREFIX-BASE+N`` (the batch's
  records; the journal keeps batch boundaries, so a recovered batch has the same id). One acknowledgement
  a batch: the rate is the encoder's.
- ``"single"``: one message an answer on ``SUBJECT.MODEL`` (consumers can filter by model), its id the
  record id. One acknowledgement an answer: a few times slower.

The stream is made at the first connection when missing (``max_age`` the retention, the duplicate window
from ``[store.stream]``); an existing stream whose settings differ is used as it is, and the difference is
logged with its fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import threading
import time
from typing import Any

import msgspec

from failsoft.store.base import StoreUnavailable
from failsoft.store.records import _NULL, _Record, read

log = logging.getLogger("failsoft.store.stream")
BATCH_TYPE = "application/cloudevents-batch+json"
EVENT_TYPE = "application/cloudevents+json"
# Seconds a publish waits for its acknowledgements before the batch goes to the spill.
ACK_TIMEOUT_S = 10.0
# (subject, body, headers, the events it holds)
Message = tuple[str, bytes, dict[str, str], int]
_token = re.compile(r"[^A-Za-z0-9_-]")


class EventData(_Record, array_like=False, gc=False):
    """The log's record, as the event's ``data``: the columns of the prediction log, by name (a batch carries
    them as an array). A shadow candidate's call has ``request_id`` and ``outputs`` as lists, item i
    answering request i; ``inputs`` is null when inputs are not logged."""


class Event(msgspec.Struct, gc=False):
    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    data: EventData


_encode = msgspec.json.Encoder().encode


def events(payload: bytes) -> list[Event]:
    """A batch from the serving process as CloudEvents, in its order."""
    return _events(*read(payload))


def _events(prefix: str, base: int, records: list[_Record]) -> list[Event]:
    """A batch's records as CloudEvents, read in one pass (outputs and inputs stay the JSON they came as).
    The hot loop of a stream log: about 3 µs an answer."""
    out = []
    sources: dict[str, str] = {}
    last, head = -1, ""
    for k, r in enumerate(records):
        ts = r.ts
        whole = int(ts)
        if whole != last:
            last, head = whole, _head(whole)
        stamp = f"{head}.{int((ts - whole) * 1e6):06d}Z"
        model = r.model
        source = sources.get(model) or sources.setdefault(model, f"failsoft/{model}")
        rid = r.record_id or f"{prefix}-{base + k}"
        req = r.request_id
        if isinstance(req, list) or r.role == "shadow":
            ids = req if isinstance(req, list) else [req]
            outputs = r.outputs if isinstance(req, list) else msgspec.Raw(b"[" + bytes(r.outputs) + b"]")
            d = EventData(rid, ids, model, r.version, r.tier, "shadow", r.degraded, r.reason, outputs, _NULL,
                          r.latency_ms, ts)  # fmt: skip
            out.append(Event("1.0", rid, source, "io.failsoft.shadow", model, stamp, "application/json", d))
            continue
        d = EventData(rid, req, model, r.version, r.tier, r.role, r.degraded, r.reason, r.outputs,
                      r.inputs, r.latency_ms, ts)  # fmt: skip
        out.append(Event("1.0", req, source, "io.failsoft.prediction", model, stamp, "application/json", d))
    return out


def _head(whole: int) -> str:
    """A whole second as RFC 3339 in UTC, without the fraction (a batch's answers share their second)."""
    return datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def subject_token(model: str) -> str:
    """A model name as one token of a NATS subject (dots, spaces and wildcards are not allowed there)."""
    return _token.sub("_", model) or "_"


class StreamLog:
    """The sink in the log writer's process (synchronous, as store/log.py calls it): its own event loop in
    a thread talks to NATS."""

    dialect = "nats"

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        o = options or {}
        self.url = url
        self.stream = str(o.get("name", "FAILSOFT_PREDICTIONS"))
        self.subject = str(o.get("subject", "failsoft.predictions"))
        self.events_mode = str(o.get("events", "batch"))
        self.max_pending = int(o.get("max_pending", 4000))
        self.duplicate_window_s = float(o.get("duplicate_window_s", 900.0))
        self.retention_s = o.get("retention_s")
        self.duplicates = 0  # records the stream already held (a replay)
        self.down_since: float | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="failsoft-stream", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._max_payload = 1 << 20

    # ---- the contract store/log.py uses -----------------------------------------------------------------

    def connect(self) -> None:
        self._run(self._connect())

    def insert_json(self, *payloads: bytes) -> int:
        """Publish the batches and wait for every acknowledgement; the records that were new to the stream
        (a duplicate within the window counts 0). Raises StoreUnavailable: the caller spills the batches."""
        return int(self._run(self._publish(payloads), ACK_TIMEOUT_S + 5))

    def delete_predictions_before(self, ts: float) -> int:
        return 0  # the stream's own max_age does it

    def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(StoreUnavailable):
                self._run(self._nc.close(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    # ---- on the sink's loop -----------------------------------------------------------------------------

    def _run(self, coro: Any, timeout_s: float = 15.0) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except Exception as err:
            future.cancel()
            if self.down_since is None:  # (an outage's start, for the warning when it outlasts the window)
                self.down_since = time.monotonic()
            if isinstance(err, StoreUnavailable):
                raise
            raise StoreUnavailable(f"NATS {self.url}: {type(err).__name__}: {err}") from err

    async def _connect(self) -> None:
        import nats

        if self._nc is not None and self._nc.is_connected:
            return
        if self._nc is None:

            async def quiet(err: Exception) -> None:  # said by the log writer, once an outage
                return None

            self._nc = await nats.connect(
                self.url, connect_timeout=2, reconnect_time_wait=0.5, max_reconnect_attempts=-1,
                error_cb=quiet, name="failsoft log writer",
            )  # fmt: skip
            self._js = self._nc.jetstream(publish_async_max_pending=self.max_pending)
            self._max_payload = int(self._nc.max_payload or self._max_payload)
            await self._ensure_stream()
        elif not self._nc.is_connected:
            raise StoreUnavailable(f"NATS {self.url}: not connected (reconnecting)")

    async def _ensure_stream(self) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        wanted_age = float(self.retention_s) if self.retention_s else 0.0
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            cfg = StreamConfig(
                name=self.stream, subjects=[f"{self.subject}.>"], storage=StorageType.FILE,
                max_age=wanted_age or None, duplicate_window=self.duplicate_window_s,
                description="failsoft's prediction log (CloudEvents)",
            )  # fmt: skip
            await self._js.add_stream(cfg)
            made = {"event": "stream_created", "stream": self.stream, "subjects": cfg.subjects,
                    "duplicate_window_s": self.duplicate_window_s, "max_age_s": wanted_age}  # fmt: skip
            log.info(json.dumps(made))
            return
        cfg = info.config
        problems = []
        if float(cfg.duplicate_window or 0) < self.duplicate_window_s:
            problems.append(
                f"its duplicate window is {cfg.duplicate_window or 0:.0f} s, shorter than "
                f"[store.stream] duplicate_window_s = {self.duplicate_window_s:.0f}: a batch replayed "
                "after a longer outage may be kept twice (`nats stream edit --dupe-window`)"
            )
        if wanted_age and cfg.max_age and float(cfg.max_age) < wanted_age:
            problems.append(f"it keeps messages {float(cfg.max_age):.0f} s, less than retention_days asks")
        if not any(s in (f"{self.subject}.>", ">") for s in cfg.subjects or []):
            problems.append(f"its subjects {cfg.subjects} do not cover {self.subject}.>: publishing fails")
        if problems:
            log.warning(json.dumps({"event": "stream_settings", "stream": self.stream, "problems": problems}))

    def _messages(self, payload: bytes) -> list[Message]:
        """A batch as (subject, body, headers) messages, ids stable for the same batch."""
        prefix, base, records = read(payload)
        evs = _events(prefix, base, records)
        if self.events_mode == "single":
            return [
                (f"{self.subject}.{subject_token(e.subject)}", _encode(e), _single(str(e.data.record_id)), 1)
                for e in evs
            ]
        out: list[Message] = []
        self._batch_messages(f"{prefix}-{base}", evs, out)
        return out

    def _batch_messages(self, key: str, evs: list[Event], out: list[Message]) -> None:
        body = _encode(evs)
        if len(body) > self._max_payload - 4096 and len(evs) > 1:  # halves, the same for the same batch
            half = len(evs) // 2
            self._batch_messages(f"{key}/a", evs[:half], out)
            self._batch_messages(f"{key}/b", evs[half:], out)
            return
        headers = {"Nats-Msg-Id": f"{key}+{len(evs)}", "Content-Type": BATCH_TYPE}
        out.append((f"{self.subject}.batch", body, headers, len(evs)))

    async def _publish(self, payloads: tuple[bytes, ...]) -> int:
        await self._connect()
        if self.down_since is not None:
            outage = time.monotonic() - self.down_since
            self.down_since = None
            if outage > self.duplicate_window_s:
                said = {"event": "stream_outage_past_duplicate_window", "outage_s": round(outage),
                        "duplicate_window_s": self.duplicate_window_s,
                        "meaning": "batches in flight when it began may be in the stream twice; the "
                        "lander keeps each record once"}  # fmt: skip
                log.warning(json.dumps(said))
        futures, counts = [], []
        for payload in payloads:
            for subject, body, headers, n in self._messages(payload):
                futures.append(await self._js.publish_async(subject, body, headers=headers))
                counts.append(n)
            await asyncio.sleep(0)  # the bytes go out (the client's flusher) while the next batch is encoded
        new = 0
        async with asyncio.timeout(ACK_TIMEOUT_S):
            for fut, n in zip(futures, counts, strict=True):
                ack = await fut
                if ack.duplicate:
                    self.duplicates += n
                else:
                    new += n
        return new


def _single(record_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": record_id, "Content-Type": EVENT_TYPE}
