"""The errors failsoft raises. None of them carries an HTTP status: the server maps them at its edge. Most
live here; those that belong to one part live beside it (the module is named), and the tree lists them all
(tests/test_public.py holds it to the code).

FailsoftError
├── ConfigError            portfolio.toml (or a file it names) is wrong; says file, key and fix
├── UnknownModel           a prediction for a model the portfolio does not serve
├── InvalidRequest         the envelope of a request is malformed (not the values inside it)
├── AuditError             an audit action that cannot be taken
│   └── NoSuchAudit        the audit item does not exist
├── PromotionError         a promotion or rollback that cannot be made as asked
│   ├── UnknownCandidate   not a tier that may be the model's primary
│   ├── AlreadyPrimary     the candidate already answers
│   ├── PolicyNotMet       the promotion policy fails (carries the failing rules)
│   └── NothingToUndo      no flip to roll back, or rolling back again would skip the policy
├── StoreError             the store (store/base.py) could not do what was asked
│   ├── StoreUnavailable   it cannot be reached now (writes spill and are replayed)
│   └── StoreRejected      it refused the values themselves
├── ProfileError           a reference profile (monitor/profile.py) that cannot be built or read
├── NoDefault              the Client (client.py): the gateway could not answer and it has no default
└── TierError              one tier could not answer; the chain turns it into a Reason
    ├── TierTimeout
    ├── TierUnavailable    connection failure, 5xx, exception in the model
    ├── TierRejected       the backend refused the request as wrong for it (4xx): a configuration fault
    ├── InvalidOutput      the answer failed the model's output check
    └── CircuitOpen        the tier's breaker is open (carries retry_after seconds)
"""

from __future__ import annotations

from failsoft.types import Reason

__all__ = [
    "AlreadyPrimary",
    "AuditError",
    "CircuitOpen",
    "ConfigError",
    "FailsoftError",
    "InvalidOutput",
    "InvalidRequest",
    "NoSuchAudit",
    "NothingToUndo",
    "PolicyNotMet",
    "PromotionError",
    "TierError",
    "TierRejected",
    "TierTimeout",
    "TierUnavailable",
    "UnknownCandidate",
    "UnknownModel",
]


class FailsoftError(Exception):
    """Base of every error failsoft raises on purpose."""


class ConfigError(FailsoftError):
    """A configuration mistake: ``file: key: problem (fix)``."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        message = f"{file}: {key}: {problem}" if key else f"{file}: {problem}"
        super().__init__(f"{message} ({fix})" if fix else message)


class UnknownModel(FailsoftError):
    def __init__(self, model: str, known: list[str]) -> None:
        import difflib

        self.model = model
        close = difflib.get_close_matches(model, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(
            f"unknown model {model!r}{hint}; this portfolio serves {', '.join(sorted(known)) or 'none'}"
        )


class InvalidRequest(FailsoftError):
    """The request envelope is malformed: not JSON, no inputs, a tensor of the wrong shape."""


class AuditError(FailsoftError):
    """An audit action that cannot be taken as asked."""


class NoSuchAudit(AuditError):
    """The audit item does not exist."""


class PromotionError(FailsoftError):
    """A promotion or rollback that cannot be made as asked."""


class UnknownCandidate(PromotionError):
    """Not a tier that may become the model's primary."""


class AlreadyPrimary(PromotionError):
    """The candidate is the model's primary already."""


class PolicyNotMet(PromotionError):
    """The promotion policy does not pass; ``failing`` holds the rules that fail."""

    def __init__(self, message: str, failing: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.failing = failing


class NothingToUndo(PromotionError):
    """No flip to roll back, or its target is gone, or rolling back again would bypass the policy."""


class TierError(FailsoftError):
    reason: Reason = Reason.ERROR


class TierTimeout(TierError):
    reason = Reason.TIMEOUT


class TierUnavailable(TierError):
    """The backend could not be reached, or answered 5xx (``status``: the HTTP status, when it answered)."""

    reason = Reason.ERROR

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TierRejected(TierError):
    """The backend answered 4xx: the request is wrong for it (a model name, a content type, an input it
    does not have). Retrying will not help; the configuration must change."""

    reason = Reason.REJECTED


class InvalidOutput(TierError):
    reason = Reason.INVALID_OUTPUT


class CircuitOpen(TierError):
    reason = Reason.CIRCUIT_OPEN

    def __init__(self, tier: str, retry_after: float) -> None:
        self.tier, self.retry_after = tier, retry_after
        super().__init__(f"circuit of tier {tier!r} is open; next probe in {retry_after:.3f}s")
