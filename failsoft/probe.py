"""Proving that every tier answers before traffic does: each tier is called once with a sample row built
from the model's input schema, and its answer is held to the model's output check; an in-process model's
own idea of its inputs (how many, which names, in which order) is compared with the declared inputs.

A tier that answers wrongly (a 4xx, a 500, an output that fails the check, inputs that do not match) is
an error: it would never serve, and every request would quietly get the next tier. A tier that cannot be
reached, times out or says it is not ready yet (502, 503, 504) is a warning: it may simply be down now, and
its breaker brings it in when it answers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec

from failsoft.chain import Chain, Tier
from failsoft.config import FeatureSpec
from failsoft.errors import InvalidOutput, TierRejected, TierUnavailable
from failsoft.tiers.python import PythonBackend
from failsoft.types import TierKind

__all__ = ["Finding", "prove", "sample_row"]

# Statuses that say "not ready yet" rather than "this request fails".
NOT_READY = {502, 503, 504}


class Finding(msgspec.Struct, frozen=True):
    model: str
    tier: str
    severity: Literal["error", "warning"]
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.model}, tier {self.tier}: {self.problem}" + (f"; fix: {self.fix}" if self.fix else "")


def sample_value(f: FeatureSpec) -> Any:
    """A value every check of ``f`` accepts: its default, a category, the middle of its range, or zero."""
    if f.default is not None:
        return f.default
    if f.type == "string":
        return f.categories[0] if f.categories else "a"
    if f.type == "bool":
        return False
    lo, hi = f.min, f.max
    mid = (lo + hi) / 2 if lo is not None and hi is not None else lo if lo is not None else hi
    value = 0.0 if mid is None else mid
    return round(value) if f.type == "int" else float(value)


def sample_row(features: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> dict[str, Any]:
    return {f.name: sample_value(f) for f in features}


def _fix(chain: Chain, tier: Tier) -> str:
    kind = tier.backend.kind
    if kind == TierKind.OIP:
        return (
            "check the tier's model_name, input_mode and parameters (MLServer's features mode needs "
            'parameters = {content_type = "pd"}) and that the declared inputs are the model\'s, in its order'
        )
    if kind == TierKind.PYTHON:
        return f"declare the model's inputs, in the order it was fitted, as [[models.{chain.model}.inputs]]"
    if kind == TierKind.SAGEMAKER:
        return (
            "check the tier's endpoint, region and credentials, and that content_type, body and "
            "output_path are what the endpoint's container reads and writes"
        )
    return "check the tier's url, body template and headers against what the endpoint expects"


async def prove_tier(
    chain: Chain, tier: Tier, row: dict[str, Any], timeout_s: float, attempts: int = 3
) -> Finding | None:
    """Why ``tier`` cannot answer ``row`` (a finding), or None when it answers and its answer passes. A
    wrong answer is asked again up to ``attempts`` times: only one that fails every time is an error (a
    flaky backend is the breaker's business, not a configuration fault)."""
    backend = tier.backend
    if isinstance(backend, PythonBackend) and backend.input_problem:
        return Finding(chain.model, tier.name, "error", backend.input_problem, _fix(chain, tier))
    first: Finding | None = None
    for _ in range(attempts):
        found = await _attempt(chain, tier, row, timeout_s)
        if found is None:
            return None
        if first is None:
            first = found
            if found.severity == "warning":  # down: asking again tells nothing more
                return found
    # the first wrong answer (an engine may drop the connection after a 500: the next call sees a reset)
    return first


async def _attempt(chain: Chain, tier: Tier, row: dict[str, Any], timeout_s: float) -> Finding | None:
    def finding(severity: Literal["error", "warning"], problem: str, fix: str) -> Finding:
        return Finding(chain.model, tier.name, severity, problem, fix)

    backend = tier.backend
    batch = chain.schema.validate([row])
    try:
        async with asyncio.timeout(max(timeout_s, tier.timeout_s)):
            out = await backend.predict(batch, "failsoft-probe", lambda: None)
    except TimeoutError:
        return finding(
            "warning",
            f"no answer to a sample row within {max(timeout_s, tier.timeout_s):g} s (down, or still loading)",
            "start the backend; its breaker brings the tier in once it answers",
        )
    except TierRejected as err:
        return finding("error", f"the backend refused a sample row: {err}", _fix(chain, tier))
    except TierUnavailable as err:
        if err.status is None or err.status in NOT_READY:
            return finding(
                "warning",
                f"unreachable now: {err}",
                "start the backend; its breaker brings it in once it answers",
            )
        return finding("error", f"the backend failed on a sample row: {err}", _fix(chain, tier))
    except InvalidOutput as err:
        return finding(
            "error",
            f"its answer to a sample row is unusable: {err}",
            "point output_name/column at the output that holds the answer (MLServer's scikit-learn runtime: "
            'output_name = "predict_proba", column = 1)',
        )
    except Exception as err:
        return finding("error", f"failed on a sample row: {type(err).__name__}: {err}", _fix(chain, tier))
    problem = chain.bad_output(out, 1)
    if problem is not None:
        return finding(
            "error",
            f"its answer to a sample row {_short(out)} fails the output check: {problem}",
            "choose the output that holds the answer (output_name, column, method), or correct "
            f"[models.{chain.model}.output]",
        )
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


async def prove(chains: dict[str, Chain], timeout_s: float = 2.0) -> list[Finding]:
    """Every tier of every chain (shadow candidates too: theirs are warnings, they serve no one yet), called
    once each, all at once."""
    jobs: list[tuple[bool, Any]] = []
    for chain in chains.values():
        row = sample_row(chain.schema.features)
        serving = {id(t) for t in chain.tiers}
        others = [t for t in chain.all_tiers() if id(t) not in serving]
        for tier in (*chain.tiers, *others):
            if tier.backend.lazy and not getattr(tier.backend, "loaded", True):
                continue  # loaded on first use: its model is not here to prove yet
            jobs.append((id(tier) not in serving, prove_tier(chain, tier, row, timeout_s)))
    results = await asyncio.gather(*(job for _, job in jobs))
    findings: list[Finding] = []
    for (candidate, _), found in zip(jobs, results, strict=True):
        if found is not None:
            findings.append(msgspec.structs.replace(found, severity="warning") if candidate else found)
    return findings
