"""OpenTelemetry traces, optional (``pip install 'failsoft[otel]'``) and off unless the standard
variables ask for them: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), sampled as
``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` say (default: parent-based, always on), named by
``OTEL_SERVICE_NAME`` (default ``failsoft``); ``OTEL_SDK_DISABLED=true`` turns them off.

When on: a server span per data-plane request (none for probes, metrics or the console), joined to an
incoming ``traceparent``; a child span per tier attempt (``failsoft.model``, ``failsoft.tier``,
``failsoft.reason``, ``failsoft.degraded``) whose context goes to remote tiers in their own
``traceparent`` header, and a span per tier passed by without a call; the trace id in the answer
(``trace_id``) and in the skip log lines. Finished spans leave in batches, every
``OTEL_BSP_SCHEDULE_DELAY`` ms (default 1000), through a bounded queue and a thread of their own to a
helper process that exports them with the SDK's exporter (failsoft/tracing_export.py), so an exporter
that fails or a collector that is down costs an answer nothing (spans are dropped when the queue is
full). When off, every function here is a check of one global and nothing else: ``TRACER is None``.
"""

from __future__ import annotations

import collections
import contextvars
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from failsoft.types import Outcome

log = logging.getLogger("failsoft.tracing")

TRACER: Any = None  # True while traces are on; None: off (the one check on the request path)
_SHIPPER: Any = None
_RESOURCE: Any = None
DELAY_S = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "1000")) / 1000.0  # how often spans leave
_RATIO = 1.0  # the share of requests without a caller's decision that are sampled
_PARENT_BASED = True  # a caller's sampled flag decides (OTEL_TRACES_SAMPLER parentbased_*, the default)
# the tier the last attempt in this request called: its skip has the attempt's span already
_ATTEMPTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("failsoft_attempted", default=None)


def wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter.lower() == "none":
        return False
    return bool(
        exporter
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def start(exporter: Any = None) -> bool:
    """Turn traces on when the variables ask for them (or with ``exporter``, a span exporter of one's
    own, used in this process: tests give the SDK's in-memory one). False when off; a missing SDK is said
    once, not fatal."""
    global TRACER, _SHIPPER, _RESOURCE
    if exporter is None and not wanted():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        log.warning('{"event": "tracing_unavailable", "fix": "pip install \'failsoft[otel]\'"}')
        return False
    _sampling()
    _RESOURCE = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "failsoft")})
    _SHIPPER = Shipper(exporter)
    TRACER = True
    return True


def _sampling() -> None:
    """``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``, read as the SDK reads them."""
    global _RATIO, _PARENT_BASED
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    _PARENT_BASED = sampler.startswith("parentbased_")
    kind = sampler.removeprefix("parentbased_")
    if kind == "always_off":
        _RATIO = 0.0
    elif kind == "traceidratio":
        try:
            _RATIO = min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
        except ValueError:
            _RATIO = 1.0
    else:
        _RATIO = 1.0


def stop() -> None:
    """Ship what is queued (the helper exports it, bounded by its exporter's timeout) and turn traces off."""
    global TRACER, _SHIPPER
    shipper, _SHIPPER, TRACER = _SHIPPER, None, None
    if shipper is not None:
        shipper.stop()
        if shipper.dropped:
            log.warning(json.dumps({"event": "spans_dropped", "count": shipper.dropped,
                                    "why": "more were waiting than the queue holds"}))  # fmt: skip


# ---- the request path (each function is only called while TRACER is not None) -------------------------
#
# The OpenTelemetry SDK costs tens of microseconds a span to make and hundreds to encode and send, in the
# process that makes it: more than a whole request costs failsoft. So the request path makes spans of its
# own here (a few fields, ids from a fast generator), decides sampling before it makes any (a request not
# sampled makes none; a caller's trace not sampled is passed on flagged 00), and ships finished spans in
# batches to a helper process (failsoft/tracing_export.py) that turns them into the SDK's spans and
# exports them with the SDK's OTLP exporter. The serving process never encodes OTLP.

_rand = random.Random()


class Span:
    """A span as the request path makes it (failsoft/tracing_export.py turns it into the SDK's)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "kind",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(self, name: str, kind: int, trace_id: int, parent_id: int) -> None:
        self.name, self.kind, self.trace_id, self.parent_id = name, kind, trace_id, parent_id
        self.span_id = _rand.getrandbits(64) or 1
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.attributes: dict[str, Any] = {}
        self.error: str | None = None

    def end(self) -> None:
        self.end_ns = time.time_ns()
        _SHIPPER.put(self)

    def record(self) -> tuple[Any, ...]:
        # the trace id as hex: 128 bits are more than msgpack's integers hold
        return (self.name, self.kind, f"{self.trace_id:032x}", self.span_id, self.parent_id, self.start_ns,
                self.end_ns, self.attributes, self.error)  # fmt: skip


SERVER, CLIENT, INTERNAL = 1, 2, 0


class _Request:
    """This request's trace: whether it is sampled, its trace id (the caller's, or a new one when sampled)
    and the span now current."""

    __slots__ = ("current", "sampled", "trace_id")

    def __init__(self, trace_id: str | None, sampled: bool) -> None:
        self.trace_id, self.sampled = trace_id, sampled
        self.current: Span | None = None


_REQUEST: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("failsoft_trace", default=None)


def _incoming(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str, bool] | None:
    """The caller's (trace id, span id, sampled) from a W3C ``traceparent`` header."""
    parent = None
    for key, value in headers:
        if key == b"traceparent":
            parent = value.decode("latin-1").strip()
            break
    if parent is None:
        return None
    parts = parent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[1] == "0" * 32:
        return None
    try:
        flags = int(parts[3][:2], 16)
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return parts[1], parts[2], bool(flags & 1)


def traced(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request has a trace: the caller sent one (sampled or not: its id is passed on), or the
    ratio samples it. A request without is answered as if traces were off."""
    for key, _value in headers:
        if key == b"traceparent":
            return True
    return _rand.random() < _RATIO


async def serve(
    name: str, model: str, headers: Iterable[tuple[bytes, bytes]], answer: Callable[[], Awaitable[Outcome]]
) -> Outcome:
    """``answer()`` inside a server span joined to the caller's trace when sampled (the caller's flag when
    it sent one, else ``OTEL_TRACES_SAMPLER_ARG``'s ratio); the outcome gets the trace's id. Only for a
    request that ``traced`` says has a trace."""
    incoming = _incoming(headers)
    if incoming is None:
        pass  # sampled by the ratio (``traced``): a trace of our own
    elif not (incoming[2] if _PARENT_BASED else _rand.random() < _RATIO):
        # the caller's trace, not sampled: its id in the answer, and passed on flagged 00
        token = _REQUEST.set(_Request(incoming[0], False))
        try:
            outcome = await answer()
        finally:
            _REQUEST.reset(token)
        return msgspec.structs.replace(outcome, trace_id=incoming[0])
    trace = incoming[0] if incoming else format(_rand.getrandbits(128) or 1, "032x")
    span = Span(name, SERVER, int(trace, 16), int(incoming[1], 16) if incoming else 0)
    span.attributes["failsoft.model"] = model
    request = _Request(trace, True)
    request.current = span
    token = _REQUEST.set(request)
    try:
        outcome = await answer()
        span.attributes["failsoft.tier"] = outcome.tier
        span.attributes["failsoft.degraded"] = outcome.degraded
        if outcome.reason is not None:
            span.attributes["failsoft.reason"] = str(outcome.reason)
    finally:
        _REQUEST.reset(token)
        span.end()
    return msgspec.structs.replace(outcome, trace_id=trace)


def active() -> bool:
    """Whether this request is sampled (its tier attempts get spans)."""
    request = _REQUEST.get()
    return request is not None and request.sampled


async def attempt(
    call: Callable[..., Awaitable[tuple[Any, Any, str]]],
    tier: Any,
    batch: Any,
    request_id: str,
    budget_s: float,
    bad_output: Any,
) -> tuple[Any, Any, str]:
    """A tier's guarded call inside a client span of its own, current while it runs so that a remote
    tier's ``traceparent`` names it (a request not sampled: the call alone)."""
    request = _REQUEST.get()
    if request is None or not request.sampled or request.current is None:
        return await call(tier, batch, request_id, budget_s, bad_output)
    parent = request.current
    span = Span(f"tier {tier.name}", CLIENT, parent.trace_id, parent.span_id)
    span.attributes["failsoft.tier"] = tier.name
    span.attributes["failsoft.rows"] = len(batch)
    request.current = span
    try:
        out, reason, detail = await call(tier, batch, request_id, budget_s, bad_output)
    finally:
        request.current = parent
        _ATTEMPTED.set(tier.name)
    span.attributes["failsoft.degraded"] = reason is not None
    if reason is not None:
        span.attributes["failsoft.reason"] = str(reason)
        span.error = (detail or str(reason))[:300]
    span.end()
    return out, reason, detail


def skipped(model: str, tier: str, reason: Any, detail: str) -> None:
    """A tier passed by without a call (quarantined, stale features, no time left): a span that says so.
    A tier that was called has its attempt's span already."""
    request = _REQUEST.get()
    if request is None or not request.sampled or request.current is None:
        return
    if _ATTEMPTED.get() == tier:
        _ATTEMPTED.set(None)
        return  # the attempt's own span says it
    parent = request.current
    span = Span(f"skip {tier}", INTERNAL, parent.trace_id, parent.span_id)
    span.attributes.update({"failsoft.model": model, "failsoft.tier": tier, "failsoft.reason": str(reason),
                            "failsoft.degraded": True, "failsoft.detail": detail[:300]})  # fmt: skip
    span.end()


def outgoing() -> dict[str, str] | None:
    """The ``traceparent`` a remote tier's request carries; None while off or outside a request."""
    if TRACER is None:
        return None
    request = _REQUEST.get()
    if request is None:
        return None  # outside a request (the start-up proof of the tiers)
    if request.sampled and request.current is not None:
        current = request.current
        return {"traceparent": f"00-{current.trace_id:032x}-{current.span_id:016x}-01"}
    # the caller's trace, not sampled: it goes on flagged 00, so what is behind does not sample it either
    return {"traceparent": f"00-{request.trace_id}-{_rand.getrandbits(64) or 1:016x}-00"}


def trace_id() -> str | None:
    """The current trace's id (for a log line, an exemplar), or None: a sampled request's, or the
    caller's."""
    if TRACER is None:
        return None
    request = _REQUEST.get()
    return None if request is None else request.trace_id


# ---- shipping finished spans out of the serving process ---------------------------------------------------


class Shipper:
    """Finished spans, batched by a thread of its own: sent to the export helper's stdin (length-prefixed
    msgspec frames), or given to an in-process exporter (tests). At most ``MAX_QUEUED`` wait: more are
    dropped and counted, never waited on."""

    MAX_QUEUED = 20_000
    BATCH = 512

    def __init__(self, exporter: Any = None) -> None:
        self.exporter = exporter
        self.queue: collections.deque[Span] = collections.deque()  # appended and taken thread-safely
        self.dropped = 0
        self.wake = threading.Event()
        self.stopping = False
        self.helper: subprocess.Popen[bytes] | None = None
        if exporter is None:
            cmd = [sys.executable, "-m", "failsoft.tracing_export"]
            self.helper = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._run, name="failsoft-traces", daemon=True)
        self.thread.start()

    def put(self, span: Span) -> None:
        queue = self.queue
        if len(queue) >= self.MAX_QUEUED:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self.BATCH:
            self.wake.set()

    def _run(self) -> None:
        import msgspec

        encode = msgspec.msgpack.Encoder().encode
        while True:
            self.wake.wait(DELAY_S)
            self.wake.clear()
            queue = self.queue
            while queue:
                records = [queue.popleft().record() for _ in range(min(self.BATCH, len(queue)))]
                if self.exporter is not None:
                    from failsoft.tracing_export import readable

                    self.exporter.export(readable(records, _RESOURCE))
                elif self.helper is not None and self.helper.stdin is not None:
                    frame = encode(records)
                    try:
                        self.helper.stdin.write(len(frame).to_bytes(4, "big") + frame)
                        self.helper.stdin.flush()
                    except OSError:
                        self.helper = None  # the helper is gone: spans are dropped from now on
            if self.stopping:
                return

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(10)
        helper, self.helper = self.helper, None
        if helper is not None and helper.stdin is not None:
            try:
                helper.stdin.close()
                helper.wait(10)  # the helper flushes what it holds, within its exporter's timeout
            except (OSError, subprocess.TimeoutExpired):
                helper.kill()
