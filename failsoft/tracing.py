"""OpenTelemetry traces, optional (``pip install 'failsoft[otel]'``) and off unless the standard
variables ask for them: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), sampled as
``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` say (default: parent-based, always on), named by
``OTEL_SERVICE_NAME`` (default ``failsoft``); ``OTEL_SDK_DISABLED=true`` turns them off.

When on: a server span per data-plane request (none for probes, metrics or the console), joined to an
incoming ``traceparent``; a child span per tier attempt (``failsoft.model``, ``failsoft.tier``,
``failsoft.reason``, ``failsoft.degraded``) whose context goes to remote tiers in their own
``traceparent`` header, and a span per tier passed by without a call; the trace id in the answer
(``trace_id``) and in the skip log lines. Spans leave through a batch processor: a bounded queue and a
thread of its own, so an exporter that fails or a collector that is down costs an answer nothing (spans
are dropped when the queue is full). When off, every function here is a check of one global and nothing
else: ``TRACER is None``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failsoft.types import Outcome

log = logging.getLogger("failsoft.tracing")

TRACER: Any = None  # the tracer while traces are on; None: off (the one check on the request path)
_PROPAGATOR: Any = None
_SPAN_KIND: Any = None
_PROVIDER: Any = None
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
    own: tests give the SDK's in-memory one). False when off; a missing SDK is said once, not fatal."""
    global TRACER, _PROPAGATOR, _SPAN_KIND, _PROVIDER
    if exporter is None and not wanted():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        log.warning('{"event": "tracing_unavailable", "fix": "pip install \'failsoft[otel]\'"}')
        return False
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    _sampling()
    # every decision is made before a span is made (serve, below): the SDK samples what it is given
    name = os.environ.get("OTEL_SERVICE_NAME", "failsoft")
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=ALWAYS_ON)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter()))
    _PROVIDER = provider
    TRACER = provider.get_tracer("failsoft")
    _PROPAGATOR = TraceContextTextMapPropagator()
    _SPAN_KIND = trace.SpanKind
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


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*


def stop() -> None:
    """Flush what is queued (bounded by the processor's own timeout) and turn traces off."""
    global TRACER, _PROVIDER
    provider, _PROVIDER, TRACER = _PROVIDER, None, None
    if provider is not None:
        provider.shutdown()


# ---- the request path (each function is only called while TRACER is not None) -------------------------
#
# The sampling decision is made here, before the SDK is touched: the OpenTelemetry SDK costs tens of
# microseconds a span even for a span it drops, so an unsampled request makes no span at all. It still
# passes the caller's trace on (flags 00: "not sampled"), so the tiers behind decide as the caller did.


class _Request:
    """This request's trace: whether it is sampled, and the caller's ids (or none)."""

    __slots__ = ("parent", "sampled", "trace_id")

    def __init__(self, trace_id: str | None, parent: str | None, sampled: bool) -> None:
        self.trace_id, self.parent, self.sampled = trace_id, parent, sampled


_REQUEST: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("failsoft_trace", default=None)


def _incoming(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str, bool, str | None] | None:
    """The caller's (trace id, span id, sampled, tracestate) from W3C trace context headers."""
    parent = state = None
    for key, value in headers:
        if key == b"traceparent":
            parent = value.decode("latin-1").strip()
        elif key == b"tracestate":
            state = value.decode("latin-1")
    if parent is None:
        return None
    parts = parent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[1] == "0" * 32:
        return None
    try:
        flags = int(parts[3][:2], 16)
    except ValueError:
        return None
    return parts[1], parts[2], bool(flags & 1), state


async def serve(
    name: str, model: str, headers: Iterable[tuple[bytes, bytes]], answer: Callable[[], Awaitable[Outcome]]
) -> Outcome:
    """``answer()`` inside a server span joined to the caller's trace when sampled (the caller's flag when
    it sent one, else ``OTEL_TRACES_SAMPLER_ARG``'s ratio); the outcome gets the trace's id."""
    import msgspec

    incoming = _incoming(headers)
    sampled = incoming[2] if incoming is not None and _PARENT_BASED else random.random() < _RATIO
    if not sampled:
        token = _REQUEST.set(
            _Request(incoming[0] if incoming else None, incoming[1] if incoming else None, False)
        )
        try:
            outcome = await answer()
        finally:
            _REQUEST.reset(token)
        return outcome if incoming is None else msgspec.structs.replace(outcome, trace_id=incoming[0])
    carrier = {}
    if incoming is not None:
        carrier["traceparent"] = f"00-{incoming[0]}-{incoming[1]}-01"
        if incoming[3]:
            carrier["tracestate"] = incoming[3]
    context = _PROPAGATOR.extract(carrier) if carrier else None
    token = _REQUEST.set(_Request(None, None, True))
    try:
        with TRACER.start_as_current_span(name, context=context, kind=_SPAN_KIND.SERVER,
                                          attributes={"failsoft.model": model}) as span:  # fmt: skip
            outcome = await answer()
            span.set_attribute("failsoft.tier", outcome.tier)
            span.set_attribute("failsoft.degraded", outcome.degraded)
            if outcome.reason is not None:
                span.set_attribute("failsoft.reason", str(outcome.reason))
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        _REQUEST.reset(token)
    return msgspec.structs.replace(outcome, trace_id=trace_id)


def _sampled() -> bool:
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
    if not _sampled():
        return await call(tier, batch, request_id, budget_s, bad_output)
    with TRACER.start_as_current_span(f"tier {tier.name}", kind=_SPAN_KIND.CLIENT) as span:
        span.set_attribute("failsoft.tier", tier.name)
        span.set_attribute("failsoft.rows", len(batch))
        out, reason, detail = await call(tier, batch, request_id, budget_s, bad_output)
        _ATTEMPTED.set(tier.name)
        span.set_attribute("failsoft.degraded", reason is not None)
        if reason is not None:
            span.set_attribute("failsoft.reason", str(reason))
            span.set_status(_error(detail or str(reason)))
        return out, reason, detail


def skipped(model: str, tier: str, reason: Any, detail: str) -> None:
    """A tier passed by without a call (quarantined, stale features, no time left): a span that says so.
    A tier that was called has its attempt's span already."""
    if not _sampled():
        return
    if _ATTEMPTED.get() == tier:
        _ATTEMPTED.set(None)
        return  # the attempt's own span says it
    with TRACER.start_as_current_span(f"skip {tier}") as span:
        span.set_attributes({"failsoft.model": model, "failsoft.tier": tier, "failsoft.reason": str(reason),
                             "failsoft.degraded": True, "failsoft.detail": detail[:300]})  # fmt: skip


def outgoing() -> dict[str, str] | None:
    """The ``traceparent`` (and ``tracestate``) a remote tier's request carries; None while off."""
    if TRACER is None:
        return None
    request = _REQUEST.get()
    if request is None:
        return None  # outside a request (the start-up proof of the tiers)
    if request.sampled:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier or None
    # not sampled: the caller's trace (or a new one) goes on flagged 00, so what is behind does not sample
    trace = request.trace_id or os.urandom(16).hex()
    return {"traceparent": f"00-{trace}-{os.urandom(8).hex()}-00"}


def trace_id() -> str | None:
    """The current trace's id (for a log line, an exemplar), or None: a sampled request's, or the
    caller's."""
    if TRACER is None:
        return None
    request = _REQUEST.get()
    if request is None:
        return None
    if not request.sampled:
        return request.trace_id
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _error(detail: str) -> Any:
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR, detail[:300])
