"""The per-request walk down a model's tiers, bounded by the model's deadline.

For each tier: open breaker -> skip (no call made); full bulkhead -> skip; else call it bounded by
min(tier timeout, what is left of the deadline); a failure or a bad answer -> next tier. The safe default
answers when everything above it was skipped, and corrupt input goes straight to it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from failsoft import tracing
from failsoft.errors import InvalidOutput, TierError
from failsoft.features.online import fill
from failsoft.metrics import Metrics
from failsoft.resilience import Breaker, Bulkhead, Clock, Deadline
from failsoft.skips import SkipLog
from failsoft.tiers.base import Backend
from failsoft.tiers.defaults import DefaultBackend
from failsoft.types import Health, Outcome, Reason, Skip
from failsoft.validation import Batch, InputSchema, InvalidValue, OutputCheck

log = logging.getLogger("failsoft.chain")
# Answers to a call at least this many are checked at once (OutputCheck.check_many), not one by one.
CHECK_AT_ONCE_FROM = 16


class RequestIds:
    """Cheap unique ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


class Tier:
    """One guarded tier of a chain: backend, breaker, bulkhead and timeout; ``sample`` is the share of
    live requests copied to it while it is a shadow candidate."""

    __slots__ = ("backend", "breaker", "bulkhead", "max_rows", "name", "sample", "timeout_s")

    def __init__(
        self,
        backend: Backend,
        breaker: Breaker,
        bulkhead: Bulkhead,
        timeout_s: float,
        sample: float = 1.0,
        max_rows: int = sys.maxsize,
    ) -> None:
        self.name = backend.name
        self.max_rows = max_rows
        self.backend = backend
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.timeout_s = timeout_s
        self.sample = sample


class Layout(NamedTuple):
    """Which tiers answer and which shadow: swapped as one object, so a request sees one or the other."""

    tiers: list[Tier]
    candidates: tuple[Tier, ...] = ()


class Answer(msgspec.Struct, frozen=True):
    """One answer as the chain's listeners (the prediction log, the monitor, the mirror) get it, after it
    is decided. Listeners run on the request path: they copy what they keep and never block."""

    outcome: Outcome
    outputs: list[Any]  # one answer per row (``outcome.outputs`` is the row's own answer for a single row)
    rows: list[Any]  # the rows as received
    batch: Batch | None  # the validated batch; None when the request was rejected as invalid
    primary: list[Any] | None  # the primary's outputs; None when another tier (or the default) answered
    candidates: tuple[Tier, ...]  # the shadow candidates to copy it to; empty unless a tier answered


# Called with every answer; must not block, must not raise (a listener that does is logged and skipped).
Listener = Callable[[Answer], None]


async def guarded_call(
    tier: Tier,
    batch: Batch,
    request_id: str,
    budget_s: float,
    bad_output: Callable[[Any, int], str | None],
) -> tuple[list[Any] | None, Reason | None, str]:
    """One call through a tier's breaker and bulkhead, bounded by ``budget_s``: its answer, or why not."""
    breaker = tier.breaker
    ticket = breaker.acquire()
    if ticket is None:
        return None, Reason.CIRCUIT_OPEN, ""
    if not tier.bulkhead.try_acquire():
        breaker.cancel(ticket)
        return None, Reason.OVERLOADED, ""
    backend = tier.backend
    try:
        if backend.inline and len(batch) <= backend.inline_rows:
            try:
                out = backend.predict_inline(batch)
            finally:
                tier.bulkhead.release()
        else:
            async with asyncio.timeout(budget_s):
                out = await backend.predict(batch, request_id, tier.bulkhead.release)
        problem = bad_output(out, len(batch))
        if problem is not None:
            raise InvalidOutput(problem)
    except InvalidValue as err:  # the request's values, not the tier: never charged to its breaker
        breaker.cancel(ticket)
        return None, Reason.INVALID_INPUT, str(err)
    except TimeoutError:
        reason, detail = Reason.TIMEOUT, f"no answer within {budget_s * 1000:.1f} ms"
    except TierError as err:
        reason, detail = err.reason, str(err)
    except asyncio.CancelledError:
        breaker.cancel(ticket)
        raise
    except Exception as err:  # the boundary where any model failure becomes a Reason
        reason, detail = Reason.ERROR, f"{type(err).__name__}: {err}"
    else:
        breaker.record(ticket, True)
        return out, None, ""
    breaker.record(ticket, False)
    return None, reason, detail


class Chain:
    """One model's tiers, walked per request. Its state has one writer each: ``layout`` through
    ``make_primary``, health through ``set_health`` (the health service), listeners through ``listen``
    (the portfolio, at start and close)."""

    def __init__(
        self,
        model: str,
        *,
        version: str,
        deadline_s: float,
        schema: InputSchema,
        check: OutputCheck,
        tiers: list[Tier],
        default: DefaultBackend,
        metrics: Metrics,
        skip_log: SkipLog,
        clock: Clock = time.monotonic,
        candidates: tuple[Tier, ...] = (),
        lookups: tuple[Any, ...] = (),
    ) -> None:
        self.model = model
        self.version = version
        self.deadline_s = deadline_s
        # Time kept back from remote and threaded calls so a fallback can still answer inside the deadline:
        # 2 ms, or a tenth of a deadline shorter than 20 ms.
        self.reserve_s = min(0.002, deadline_s / 10)
        self.schema = schema
        self.output_spec = check.spec
        self.check = check.check
        self.check_many = check.check_many
        self.layout = Layout(tiers, candidates)
        # the tiers that may be the primary (the first tier and the candidates), by name, and the rest
        self.eligible: dict[str, Tier] = {t.name: t for t in [*tiers[:1], *candidates]}
        self._fallbacks = tiers[1:]
        self.default = default
        self.metrics = metrics
        self.skip_log = skip_log
        self.clock = clock
        self.health = Health.LIVE
        self.health_reason = ""
        # Values filled in from the online feature store (failsoft.features.online), if the model uses any.
        self.lookups = lookups
        # Given every answer (the prediction log, the monitor, the mirror).
        self.listeners: tuple[Listener, ...] = ()
        self._listener_errors = 0

    def set_health(self, health: Health, reason: str) -> None:
        """The model's health as the health service applied it (quarantined: the primary is skipped)."""
        self.health, self.health_reason = health, reason

    def listen(self, listeners: tuple[Listener, ...]) -> None:
        """Who is given every answer from now on (the prediction log, the monitor, the mirror, the
        console's history); the portfolio sets them when it starts and clears them when it closes."""
        self.listeners = listeners

    def all_tiers(self) -> list[Tier]:
        """Every tier this chain may call, whatever the layout: the eligible primaries and the fallbacks."""
        return [*self.eligible.values(), *self._fallbacks]

    def make_primary(self, live: str) -> bool:
        """Make ``live`` the primary and the other eligible tiers its shadow candidates, in one swap (a
        request sees the old layout or the new one). False when ``live`` is not eligible."""
        primary = self.eligible.get(live)
        if primary is None:
            return False
        if self.tiers and self.tiers[0] is primary:
            return True
        others = tuple(t for n, t in self.eligible.items() if n != live)
        self.layout = Layout([primary, *self._fallbacks], others)
        log.warning(json.dumps({"event": "primary_changed", "model": self.model, "primary": live,
                                "candidates": [t.name for t in others]}))  # fmt: skip
        return True

    @property
    def tiers(self) -> list[Tier]:
        return self.layout.tiers

    def _skip(self, skips: list[Skip], tier: str, reason: Reason, request_id: str, detail: str = "") -> None:
        skips.append(Skip(tier, reason, detail))
        self.metrics.skip(self.model, tier, reason)
        self.skip_log.skip(self.model, tier, reason, request_id, detail)
        if tracing.TRACER is not None and tracing.active():
            tracing.skipped(self.model, tier, reason, detail)

    def bad_output(self, out: Any, n: int) -> str | None:
        """Why ``out`` is not an answer to ``n`` rows by the model's output check; None when it is."""
        if not isinstance(out, list) or len(out) != n:
            return f"expected {n} answers, got {type(out).__name__}"
        if n >= CHECK_AT_ONCE_FROM:
            return self.check_many(out)
        check = self.check
        for value in out:
            if (problem := check(value)) is not None:
                return problem
        return None

    async def run(self, rows: list[Any], request_id: str, single: bool = False) -> Outcome:
        """Answer ``rows``; with ``single`` the outputs are the one row's answer rather than a list.
        Never raises for a well-formed request: even a bug of ours is answered by the safe default."""
        deadline = Deadline(self.deadline_s, self.clock)
        skips: list[Skip] = []
        try:
            return await self._walk(rows, request_id, single, deadline, skips)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the last boundary: whatever broke, the product gets the default
            log.exception("chain of %s failed; answering with the safe default", self.model)
            skips.append(Skip("chain", Reason.ERROR, repr(err)[:300]))
            outputs = self.default.answer(len(rows))
            return self._finish(deadline, request_id, self.default.name, outputs, skips, single, rows, None)

    async def _walk(
        self, rows: list[Any], request_id: str, single: bool, deadline: Deadline, skips: list[Skip]
    ) -> Outcome:
        layout = self.layout
        first = layout.tiers[0].name if layout.tiers else self.default.name
        stale = None
        if self.lookups:
            rows, stale = fill(self.lookups, rows, self.lookups[0].online.now())
            if stale is not None and self.health is not Health.QUARANTINED:
                self._skip(skips, first, Reason.STALE_FEATURES, request_id, stale)
        try:
            batch = self.schema.validate(rows)
        except InvalidValue as err:
            noted = self.schema.unknown_warnings(self.schema.unknown_keys(rows))
            if noted:
                self.metrics.unknown_input(self.model, len(noted))
            self._skip(skips, first, Reason.INVALID_INPUT, request_id, "; ".join((str(err), *noted)))
            outputs = self.default.answer(len(rows))
            return self._finish(
                deadline, request_id, self.default.name, outputs, skips, single, rows, None, warnings=noted
            )
        warnings: tuple[str, ...] = ()
        if batch.unknown:
            warnings = self.schema.unknown_warnings(batch.unknown)
            self.metrics.unknown_input(self.model, len(batch.unknown))
        tiers = layout.tiers
        if self.health is Health.QUARANTINED and tiers:
            self._skip(skips, tiers[0].name, Reason.QUARANTINED, request_id)
            tiers = tiers[1:]
        elif stale is not None and tiers:
            tiers = tiers[1:]
        for tier in tiers:
            out = await self._call(tier, batch, deadline, skips, request_id)
            if out is not None:
                primary = out if tier is layout.tiers[0] else None
                return self._finish(
                    deadline, request_id, tier.name, out, skips, single, batch.rows, batch, warnings=warnings,
                    primary=primary, candidates=layout.candidates,
                )  # fmt: skip
        outputs = self.default.answer(len(batch))
        name = self.default.name
        return self._finish(
            deadline, request_id, name, outputs, skips, single, batch.rows, batch, warnings=warnings
        )

    async def _call(
        self, tier: Tier, batch: Batch, deadline: Deadline, skips: list[Skip], request_id: str
    ) -> list[Any] | None:
        # Keep a reserve for the fallback and the response itself; an inline tier costs microseconds and
        # may use what is left of the deadline down to zero.
        if tier.backend.lazy and (why := tier.backend.use()) is not None:  # not loaded: never waited for
            self._skip(skips, tier.name, why[0], request_id, why[1])
            return None
        if len(batch) > tier.max_rows:  # the request's size, not the tier's health: no call, no charge
            detail = f"batch of {len(batch)} rows is over this tier's max_rows ({tier.max_rows})"
            self._skip(skips, tier.name, Reason.OVERLOADED, request_id, detail)
            return None
        inline = tier.backend.inline
        budget = deadline.bound(tier.timeout_s) - (0.0 if inline else self.reserve_s)
        if budget <= 0.0 and not (inline and not deadline.expired()):
            self._skip(skips, tier.name, Reason.TIMEOUT, request_id, "no time left in the deadline")
            return None
        if tracing.TRACER is None or not tracing.active():  # not traced: nothing more than this check
            out, reason, detail = await guarded_call(tier, batch, request_id, budget, self.bad_output)
        else:
            out, reason, detail = await tracing.attempt(
                guarded_call, tier, batch, request_id, budget, self.bad_output
            )
        if reason is not None:
            self._skip(skips, tier.name, reason, request_id, detail)
        return out

    def _finish(
        self,
        deadline: Deadline,
        request_id: str,
        tier: str,
        outputs: list[Any],
        skips: list[Skip],
        single: bool,
        rows: list[Any],
        batch: Batch | None,
        *,
        warnings: tuple[str, ...] = (),
        primary: list[Any] | None = None,
        candidates: tuple[Tier, ...] = (),
    ) -> Outcome:
        """The outcome of a request (what it answered, and why), handed to every listener."""
        latency = deadline.elapsed()
        degraded = bool(skips)
        reason = skips[0].reason if skips else None
        self.metrics.answer(self.model, tier, reason, latency, degraded)
        outcome = Outcome(
            id=request_id,
            model=self.model,
            version=self.version,
            tier=tier,
            degraded=degraded,
            reason=reason,
            outputs=outputs[0] if single else outputs,
            latency_ms=latency * 1000.0,
            skips=tuple(skips),
            warnings=warnings or msgspec.UNSET,
        )
        if self.listeners:
            answer = Answer(outcome, outputs, rows, batch, primary, candidates)
            for listener in self.listeners:
                try:
                    listener(answer)
                except Exception:  # a listener's bug costs its own record, never the answer
                    self._listener_errors += 1
                    if self._listener_errors in (1, 10, 100) or self._listener_errors % 1000 == 0:
                        log.exception("a listener of %s failed (%d times)", self.model, self._listener_errors)
        return outcome
