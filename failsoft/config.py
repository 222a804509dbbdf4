"""portfolio.toml -> a typed, validated, immutable spec.

Every error names the file, the key and the fix, e.g.
``portfolio.toml: models.recs.tiers[1].timeout_ms: Expected `int` >= 1, got -5 (use a positive number of
milliseconds)``. Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import difflib
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from failsoft.env import STORE_URL, WEBHOOK_SECRET
from failsoft.env import environ as environment
from failsoft.errors import ConfigError

__all__ = [
    "AuditSpec",
    "BreakerSpec",
    "DefaultTierSpec",
    "FeatureSpec",
    "HttpTierSpec",
    "ModelSpec",
    "OipTierSpec",
    "OutputSpec",
    "PortfolioSpec",
    "PythonTierSpec",
    "SageMakerTierSpec",
    "ServerSpec",
    "StoreSpec",
    "TierSpec",
    "load",
    "parse",
]

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_NAME = re.compile(_NAME_PATTERN)
Name = Annotated[str, Meta(pattern=_NAME_PATTERN)]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BreakerSpec(_Spec, frozen=True):
    window: PositiveInt = 20
    min_calls: PositiveInt = 10
    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    open_ms: PositiveInt = 5000
    half_open_probes: PositiveInt = 1


class FeatureSpec(_Spec, frozen=True):
    name: Name
    type: Literal["float", "int", "bool", "string"] = "float"
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    default: float | int | bool | str | None = None


class OutputSpec(_Spec, frozen=True):
    type: Literal["float", "int", "string", "list", "vector", "any"] = "any"
    min: float | None = None
    max: float | None = None
    length: PositiveInt | None = None
    min_length: Annotated[int, Meta(ge=0)] = 1
    max_length: PositiveInt | None = None


class _CallTier(_Spec, frozen=True, kw_only=True):
    name: Name
    timeout_ms: PositiveInt = 100
    max_concurrency: PositiveInt = 32
    breaker: BreakerSpec = msgspec.field(default_factory=BreakerSpec)
    # The share of live requests copied to it while it is a shadow candidate (or after a promotion
    # makes the tier a candidate).
    sample: Annotated[float, Meta(gt=0, le=1)] = 1.0
    # The most rows one call may carry; a bigger batch passes this tier by (reason overloaded) and is never
    # charged to its breaker. Default: no bound, but a row-at-a-time http tier takes at most pool_size.
    max_rows: PositiveInt | None = None

    def row_limit(self) -> int:
        return self.max_rows or sys.maxsize


class PythonTierSpec(_CallTier, frozen=True, tag="python", tag_field="kind"):
    target: str | None = None
    path: str | None = None
    method: Literal["auto", "predict_proba", "predict", "call"] = "auto"
    column: int | None = None
    call: Literal["row", "batch"] = "row"
    compile: bool = True
    # "process": in worker processes of its own (a call past its timeout kills and replaces its worker)
    run: Literal["auto", "thread", "inline", "process"] = "auto"
    # run = "process": how many worker processes (the tier's concurrency limit then)
    processes: PositiveInt = 2


class OipTierSpec(_CallTier, frozen=True, tag="oip", tag_field="kind"):
    url: str
    model_name: str
    model_version: str | None = None
    input_mode: Literal["tensor", "features"] = "tensor"
    input_name: str = "input"
    datatype: Literal["FP64", "FP32", "INT64", "INT32"] = "FP64"
    output_name: str | None = None
    # a model answering a row per class (predict_proba's [n, 2]): which column is the answer (1: P(class 1))
    column: int | None = None
    # request-level parameters sent with every call (MLServer's features mode needs content_type = "pd")
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    pool_size: PositiveInt = 100


class HttpTierSpec(_CallTier, frozen=True, tag="http", tag_field="kind"):
    url: str
    body: Any = msgspec.field(default_factory=lambda: {"inputs": "$inputs"})
    output_path: str = "outputs"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    batch: bool = False
    pool_size: PositiveInt = 100

    def row_limit(self) -> int:
        # one connection a row: more rows than connections cannot go in one round
        return self.max_rows or (sys.maxsize if self.batch else self.pool_size)


class SageMakerTierSpec(_CallTier, frozen=True, tag="sagemaker", tag_field="kind"):
    """An Amazon SageMaker real-time endpoint, called with boto3's sagemaker-runtime InvokeEndpoint
    (credentials from the usual chain: environment, shared files, the instance's role)."""

    endpoint: str
    region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION / the shared config
    variant: str | None = None  # TargetVariant: one production variant rather than the traffic split
    content_type: Literal["application/json", "text/csv"] = "application/json"
    accept: str | None = None  # default: content_type
    # JSON: the body, where "$matrix" is the rows as lists of values in input order and "$rows" the rows
    # as objects (a bare "$matrix" is what the scikit-learn and PyTorch containers read)
    body: Any = "$matrix"
    # JSON: where the answers are in the reply ("" for the reply itself, e.g. "predictions")
    output_path: str = ""
    # answers with one value per class (a [n, 2] probability): which column is the answer
    column: int | None = None
    endpoint_url: str | None = None  # a VPC interface endpoint, or a local stand-in


class DefaultTierSpec(_Spec, frozen=True, tag="default", tag_field="kind"):
    name: Name = "default"
    value: Any = None
    source: str | None = None
    item_column: str = "item"
    count_column: str | None = None
    top_n: PositiveInt = 10
    refresh_s: PositiveFloat = 300.0


TierSpec = PythonTierSpec | OipTierSpec | HttpTierSpec | SageMakerTierSpec | DefaultTierSpec
CandidateSpec = PythonTierSpec | OipTierSpec | HttpTierSpec | SageMakerTierSpec

METRICS = ("auc", "accuracy", "log_loss", "brier", "mae", "rmse", "hit_rate")


class PromotionSpec(_Spec, frozen=True):
    """When a shadow candidate has proved itself (every rule must pass for ``failsoft promote``)."""

    min_shadow_s: Annotated[float, Meta(ge=0)] = 7 * 86400.0
    min_labelled: Annotated[int, Meta(ge=0)] = 500
    metric: Literal["auc", "accuracy", "log_loss", "brier", "mae", "rmse", "hit_rate"] = "auc"
    # hit_rate: was the label among the first k items served
    k: PositiveInt = 10
    # non-inferiority: the 95% interval's lower bound of the improvement must be >= -margin
    margin: Annotated[float, Meta(ge=0)] = 0.0
    max_error_rate: Annotated[float, Meta(ge=0, le=1)] = 0.01
    max_timeout_rate: Annotated[float, Meta(ge=0, le=1)] = 0.01
    max_p99_ms: PositiveFloat | None = None
    require_approval: bool = False


Share = Annotated[float, Meta(ge=0, le=1)]


class DriftSpec(_Spec, frozen=True):
    """What counts as drift in one window (or offline chunk). A feature drifts when one of its ``tests``
    rejects "same distribution as the reference" at family-wise level ``alpha`` (Holm's correction over
    every test of every feature and the predictions, so 50 features do not alarm on noise) and its PSI
    also reaches ``min_psi`` (a significant but immaterial shift in a big window is not an alarm). Data
    quality: the missing share rising by more than ``max_missing`` over the reference's, values outside
    the reference's range, categories it never saw, requests rejected as invalid."""

    tests: list[Literal["psi", "ks", "chi2"]] = msgspec.field(default_factory=lambda: ["psi", "ks", "chi2"])
    alpha: Annotated[float, Meta(gt=0, lt=1)] = 0.01
    min_psi: Annotated[float, Meta(ge=0)] = 0.1
    min_rows: PositiveInt = 30
    max_missing: Share = 0.1
    max_out_of_range: Share = 0.05
    max_unseen: Share = 0.05
    max_invalid: Share = 0.1
    prediction: bool = True


class MonitorSpec(DriftSpec, frozen=True):
    """The online monitor of one model. The reference is a ``profile`` file (``failsoft profile``), or
    learned from the model's first ``learn_rows`` live requests. A window closes after ``window_rows``
    requests, or after ``window_s`` once it holds ``min_rows``. ``warn_after`` drifted windows in a row make
    the model ``warning``, ``quarantine_after`` make it ``quarantined`` (with ``action = "quarantine"``);
    ``recover_after`` clean windows in a row bring it back, unless ``recovery = "manual"`` (then a person
    restores it from the audit queue). Rows alone are cheap to send, so a quarantine also needs evidence over
    time: the drifted windows in a row must span ``min_span_s`` seconds (before that, ``warning``).

    Drift is told from a window's rows, not from the share of traffic they are, so a busy model is watched
    from a sample: past ``max_rows_per_s`` rows a second, requests are kept at random (each with the same
    chance, set once a second from the rate seen), and a window of ``window_rows`` takes
    ``window_rows / max_rows_per_s`` seconds or more to fill however busy the model is. 0 keeps every
    request."""

    profile: str | None = None
    learn_rows: Annotated[int, Meta(ge=0)] = 0
    window_rows: PositiveInt = 5000
    window_s: PositiveFloat = 60.0
    max_rows_per_s: Annotated[float, Meta(ge=0)] = 1000.0
    warn_after: PositiveInt = 1
    quarantine_after: PositiveInt = 3
    min_span_s: Annotated[float, Meta(ge=0)] = 60.0
    recover_after: PositiveInt = 3
    recovery: Literal["auto", "manual"] = "auto"
    action: Literal["quarantine", "warn"] = "quarantine"
    # binary: scores are P(positive); the others are read from the output type when "auto"
    task: Literal["auto", "binary", "multiclass", "regression", "ranking"] = "auto"
    k: PositiveInt = 10
    threshold: Annotated[float, Meta(ge=0, le=1)] = 0.5
    keep_windows: PositiveInt = 100


class AuditSpec(_Spec, frozen=True):
    """When a person is asked to look: a fallback episode longer than ``after_s``, or a default older
    than ``default_max_age_s`` (0: never)."""

    after_s: PositiveFloat = 1800.0
    degraded_share: Annotated[float, Meta(ge=0, lt=1)] = 0.5
    window_s: PositiveFloat = 60.0
    min_answers: Annotated[int, Meta(ge=0)] = 5
    default_max_age_s: Annotated[float, Meta(ge=0)] = 0.0
    webhook: str | None = None
    # the environment variable holding the webhook's signing secret (unset: deliveries are not signed)
    webhook_secret_env: str = WEBHOOK_SECRET
    remind_after_s: PositiveFloat = 3600.0


class FeatureUseSpec(_Spec, frozen=True):
    """Values a model reads from the online feature store, keyed by the table's entity fields in the
    request; older than ``max_age_s`` (on ``event_time``) means stale: the primary tier is skipped."""

    table: Name
    columns: list[str] | None = None
    max_age_s: PositiveFloat | None = None


class FeaturesSpec(_Spec, frozen=True):
    """Where feature tables are kept (default: ``<data_dir>/features``) and how often the online lookup
    looks for new rows."""

    dir: str | None = None
    refresh_s: PositiveFloat = 10.0


class ModelSpec(_Spec, frozen=True):
    version: str = "1"
    deadline_ms: PositiveInt = 100
    inputs: list[FeatureSpec] = msgspec.field(default_factory=list)
    output: OutputSpec = msgspec.field(default_factory=OutputSpec)
    tiers: list[TierSpec] = msgspec.field(default_factory=list)
    # None: the portfolio's [audit] table
    audit: AuditSpec | None = None
    features: list[FeatureUseSpec] = msgspec.field(default_factory=list)
    candidates: list[CandidateSpec] = msgspec.field(default_factory=list)
    promotion: PromotionSpec = msgspec.field(default_factory=PromotionSpec)
    monitor: MonitorSpec | None = None


class ShadowSpec(_Spec, frozen=True):
    """Mirroring: copies waiting per candidate (more are dropped and counted, never waited on), the
    most copies sent to a candidate in one call when they pile up, and how long copies pile up before
    the candidates get them (longer: fewer, bigger calls; the answers are logged, never waited on)."""

    queue: PositiveInt = 10_000
    max_batch: PositiveInt = 256
    linger_ms: PositiveFloat = 5.0


class StoreSpec(_Spec, frozen=True):
    # sqlite:///PATH or postgresql://...; default: SQLite in data_dir. FAILSOFT_STORE_URL overrides it.
    url: str | None = None
    log_predictions: bool = True
    log_inputs: bool = False
    batch_size: PositiveInt = 1000
    flush_ms: PositiveInt = 200
    max_buffer: PositiveInt = 200_000
    spill_max_mb: PositiveInt = 1024
    retention_days: Annotated[float, Meta(ge=0)] = 30.0
    poll_ms: PositiveInt = 500
    # Each answer's record also written to a local journal before the answer is sent, so a crash of the
    # serving process (kill -9) loses none (store/journal.py); costs a write call per answer.
    journal: bool = False


class ServerSpec(_Spec, frozen=True):
    max_body_bytes: PositiveInt = 1 << 20
    max_batch: PositiveInt = 1024
    # A client's request line and headers: at most this many bytes and headers (431 past either).
    max_header_bytes: PositiveInt = 65536
    max_headers: PositiveInt = 100
    # Seconds a client has to send a request's headers, and then its body (408 past either).
    header_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 30.0
    # Seconds an idle keep-alive connection stays open.
    keep_alive_s: PositiveFloat = 5.0
    # Open connections at most; more are refused at once with a 503 (the descriptor limit is raised to fit).
    max_connections: PositiveInt = 10000
    # TOML, one line per owner: alice = "TOKEN". FAILSOFT_TOKENS_FILE overrides it.
    tokens_file: str | None = None


class PortfolioSpec(_Spec, frozen=True):
    models: dict[Name, ModelSpec]
    data_dir: str = "failsoft-data"
    trusted_model_dirs: list[str] = msgspec.field(default_factory=list)
    server: ServerSpec = msgspec.field(default_factory=ServerSpec)
    store: StoreSpec = msgspec.field(default_factory=StoreSpec)
    audit: AuditSpec = msgspec.field(default_factory=AuditSpec)
    features: FeaturesSpec = msgspec.field(default_factory=FeaturesSpec)
    shadow: ShadowSpec = msgspec.field(default_factory=ShadowSpec)
    # Where the file lives; relative paths inside it are resolved against this folder.
    base_dir: str = "."
    file: str = "portfolio.toml"

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def store_url(self) -> str:
        """The store's URL: [store].url (relative SQLite paths against the file), else SQLite in data_dir."""
        url = self.store.url
        if url is None:
            return f"sqlite:///{self.resolve(self.data_dir) / 'failsoft.db'}"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return f"sqlite:///{self.resolve(url.removeprefix('sqlite:///'))}"
        return url


_FIXES = [
    (re.compile(r"unknown field"), "remove the key or correct its spelling (see README: portfolio.toml)"),
    (re.compile(r"missing required field"), "add the key"),
    (re.compile(r">= 1|> 0"), "use a positive number"),
    (re.compile(r"Invalid value .* kind|tag"), "kind must be one of: python, oip, http, sagemaker, default"),
    (re.compile(r"does not match regex"), "use letters, digits, '_', '-' or '.', at most 64 characters"),
]


def _key(path: str) -> str:
    key = path.removeprefix("$").removeprefix(".")
    return key


_MISSING = object()


def _lookup(doc: Any, path: str) -> Any:
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            doc = doc[int(index)] if index else doc[name]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return doc


def suggest(word: str, known: Iterable[str]) -> str:
    """ "did you mean 'x'?" for the closest known name, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _struct_at(kind: Any, doc: Any, path: str) -> tuple[Any, Any]:
    """The msgspec type information of the table at ``path`` (and that table of ``doc``): a tier's own
    kind chosen by its ``kind`` key."""
    info: Any = msgspec.inspect.type_info(kind)
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        info = _pick(info, doc)
        try:
            if index:
                info, doc = info.item_type, doc[int(index)]
            else:
                info, doc = next(f.type for f in info.fields if f.name == name), doc.get(name)
        except (AttributeError, StopIteration, KeyError, IndexError, TypeError):
            return None, None
    return _pick(info, doc), doc


def _pick(info: Any, doc: Any) -> Any:
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        tagged = [t for t in structs if isinstance(doc, dict) and t.tag == doc.get(t.tag_field or "")]
        if tagged or structs:
            return (tagged or structs)[0]
    return info


def _field_names(info: Any) -> list[str]:
    return [f.name for f in getattr(info, "fields", ())]


def _from_msgspec(
    file: str, err: msgspec.ValidationError, prefix: str = "", doc: Any = None, root: Any = None
) -> ConfigError:
    text = str(err)
    m = re.match(r"^(.*?)(?: - at `(.*)`)?$", text, re.S)
    problem, at = (m.group(1), m.group(2)) if m else (text, None)
    key = _key(at or "")
    if prefix:
        key = f"{prefix}{key}" if key.startswith("[") or not key else f"{prefix}.{key}"
    fix = next((f for rx, f in _FIXES if rx.search(problem)), "")
    if "unknown field" in problem:
        field = re.search(r"`(.+?)`", problem)
        if field:
            key = f"{key}.{field.group(1)}" if key else field.group(1)
            if root is not None:
                info, _ = _struct_at(root, doc, _key(at or ""))
                hint = suggest(field.group(1), _field_names(info))
                fix = f"correct its spelling: {hint}" if hint else fix
    if "missing required field" in problem:
        field = re.search(r"`(.+?)`", problem)
        if field:
            key = f"{key}.{field.group(1)}" if key else field.group(1)
    got = _lookup(doc, _key(at or "")) if doc is not None and at else _MISSING
    if problem.startswith("Invalid value") and key.endswith(".kind") and isinstance(got, str):
        kinds = ["python", "oip", "http", "sagemaker", "default"]
        hint = suggest(got, kinds)
        fix = f"kind must be one of: {', '.join(kinds)}" + (f"; {hint}" if hint else "")
        return ConfigError(file, key, f"unknown kind {got!r}", fix)
    if problem.startswith(("Expected `int`", "Expected `float`")) and isinstance(got, str):
        problem, fix = problem.replace("got `str`", f"got {got!r}"), _number_fix(key, got)
    elif problem.startswith("Expected `str`") and isinstance(got, int | float) and not isinstance(got, bool):
        fix = f'quote it: {key.rsplit(".", 1)[-1]} = "{got}"'
    if got is not _MISSING and "got" not in problem and not isinstance(got, dict | list):
        problem = f"{problem}, got {got!r}"
    return ConfigError(file, key, problem, fix)


# what a key's name says its number counts (deadline_ms = 60)
_UNIT_SUFFIXES = (("_ms", "milliseconds"), ("_s", "seconds"), ("_days", "days"), ("_mb", "MiB"),
                  ("_bytes", "bytes"))  # fmt: skip


def _number_fix(key: str, got: str) -> str:
    """A number written as text ("60ms", "2"): the unit is in the key's name; write the number alone."""
    name = key.rsplit(".", 1)[-1]
    unit = next((u for suffix, u in _UNIT_SUFFIXES if name.endswith(suffix)), "")
    number = re.match(r"\s*(\d+(?:\.\d+)?)", got)
    example = f"{name} = {number.group(1) if number else 1}"
    if unit:
        return f"write a number of {unit}, without quotes or a unit (the key's name says it): {example}"
    return f"write a number, without quotes: {example}"


def parse(raw: dict[str, Any], file: str = "portfolio.toml", base_dir: str = ".") -> PortfolioSpec:
    """Validate a parsed TOML document. Raises ConfigError naming file, key and fix."""
    models_raw = raw.get("models")
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError(file, "models", "no models declared", "add at least one [models.NAME] table")
    try:
        top = msgspec.convert(
            {**raw, "models": {}, "base_dir": base_dir, "file": file}, PortfolioSpec, strict=True
        )
    except msgspec.ValidationError as err:
        raise _from_msgspec(file, err, doc=raw, root=PortfolioSpec) from None
    models: dict[str, ModelSpec] = {}
    for name, model in models_raw.items():
        if not _NAME.match(name):
            raise ConfigError(
                file,
                f"models.{name}",
                "not a valid model name",
                "use letters, digits, '_', '-' or '.', at most 64 characters",
            )
        try:
            models[name] = msgspec.convert(model, ModelSpec, strict=True)
        except msgspec.ValidationError as err:
            raise _from_msgspec(file, err, prefix=f"models.{name}", doc=model, root=ModelSpec) from None
    spec = msgspec.structs.replace(top, models=models)
    _check(spec)
    return spec


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> PortfolioSpec:
    """Read and validate a portfolio.toml file. ``FAILSOFT_STORE_URL`` in the environment (the one place
    failsoft reads it) overrides [store].url, so replicas can share a database without editing the file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found", "pass the path of your portfolio.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(p), "", f"not valid TOML: {err}", "fix the TOML syntax at that line") from None
    env = environment() if environ is None else environ
    if env.get(STORE_URL):
        raw.setdefault("store", {})["url"] = env[STORE_URL]
    return parse(raw, file=str(p), base_dir=str(p.parent.resolve()))


def _check(spec: PortfolioSpec) -> None:
    """Rules that span keys, which the types alone cannot say."""
    f = spec.file
    if not spec.models:
        raise ConfigError(f, "models", "no models declared", "add at least one [models.NAME] table")
    for name, model in spec.models.items():
        at = f"models.{name}"
        if not model.tiers:
            raise ConfigError(f, f"{at}.tiers", "the chain is empty", "add [[models.NAME.tiers]] tables")
        last = model.tiers[-1]
        if not isinstance(last, DefaultTierSpec):
            raise ConfigError(
                f,
                f"{at}.tiers[{len(model.tiers) - 1}]",
                "the last tier must be the safe default",
                'end the chain with a tier of kind = "default"',
            )
        seen: set[str] = set()
        for i, tier in enumerate(model.tiers):
            tat = f"{at}.tiers[{i}]"
            if tier.name in seen:
                raise ConfigError(
                    f, f"{tat}.name", f"duplicate tier name {tier.name!r}", "give each tier its own name"
                )
            seen.add(tier.name)
            if isinstance(tier, DefaultTierSpec):
                if i != len(model.tiers) - 1:
                    raise ConfigError(
                        f, tat, "a default tier must be the last of the chain", "move it to the end"
                    )
                if tier.value is None and tier.source is None:
                    raise ConfigError(
                        f, tat, "a default needs a value or a source", "set value = ... or source = FILE"
                    )
            else:
                _check_call_tier(spec, tier, tat)
        for i, cand in enumerate(model.candidates):
            cat = f"{at}.candidates[{i}]"
            if cand.name in seen:
                raise ConfigError(
                    f,
                    f"{cat}.name",
                    f"duplicate name {cand.name!r}",
                    "give each tier and candidate its own name (promotion swaps them by name)",
                )
            seen.add(cand.name)
            _check_call_tier(spec, cand, cat)
        names: set[str] = set()
        for i, feat in enumerate(model.inputs):
            fat = f"{at}.inputs[{i}]"
            if feat.name in names:
                raise ConfigError(
                    f, f"{fat}.name", f"duplicate feature {feat.name!r}", "name each feature once"
                )
            names.add(feat.name)
            if feat.min is not None and feat.max is not None and feat.min > feat.max:
                raise ConfigError(f, f"{fat}.min", f"min {feat.min} > max {feat.max}", "swap them")
            if feat.categories is not None and feat.type != "string":
                raise ConfigError(
                    f,
                    f"{fat}.categories",
                    "categories apply to string features",
                    'set type = "string" or remove categories',
                )
        mon = model.monitor
        if mon is not None and (mon.profile is None) == (mon.learn_rows == 0):
            raise ConfigError(
                f,
                f"{at}.monitor",
                "set exactly one of profile and learn_rows",
                'profile = "profiles/NAME.json" (from `failsoft profile`) or learn_rows = 5000',
            )


def _check_call_tier(spec: PortfolioSpec, tier: CandidateSpec, tat: str) -> None:
    f = spec.file
    if isinstance(tier, PythonTierSpec):
        if (tier.target is None) == (tier.path is None):
            raise ConfigError(f, tat, "set exactly one of target and path", 'e.g. target = "pkg.mod:predict"')
        if tier.target is not None and ":" not in tier.target:
            raise ConfigError(
                f,
                f"{tat}.target",
                f"{tier.target!r} is not module:attribute",
                'write it as "package.module:name"',
            )
        if tier.path is not None:
            _check_model_path(spec, tier.path, f"{tat}.path")
    elif isinstance(tier, SageMakerTierSpec):
        if tier.endpoint_url is not None and not tier.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f,
                f"{tat}.endpoint_url",
                f"{tier.endpoint_url!r} is not an http(s) URL",
                "write it as https://host",
            )
        if tier.content_type == "text/csv" and tier.body != "$matrix":
            raise ConfigError(f, f"{tat}.body", "a CSV body is one line a row", "remove body, or send JSON")
    elif not tier.url.startswith(("http://", "https://")):
        raise ConfigError(
            f, f"{tat}.url", f"{tier.url!r} is not an http(s) URL", "write it as http://host:port"
        )
    if tier.breaker.min_calls > tier.breaker.window:
        raise ConfigError(
            f, f"{tat}.breaker.min_calls", "cannot exceed breaker.window", "lower min_calls or raise window"
        )


_MODEL_SUFFIXES = (".onnx", ".joblib", ".pkl", ".pickle", ".txt", ".lgb")


def _check_model_path(spec: PortfolioSpec, path: str, key: str) -> None:
    p = spec.resolve(path)
    if not p.name.endswith(_MODEL_SUFFIXES):
        raise ConfigError(
            spec.file,
            key,
            f"unsupported model file {p.name!r}",
            "use .onnx, .joblib/.pkl (scikit-learn, LightGBM) or .txt/.lgb (LightGBM booster)",
        )
    if p.suffix == ".onnx":
        return
    # Unpickling runs code: only files under a folder the config trusts are loaded.
    trusted = [spec.resolve(d).resolve() for d in spec.trusted_model_dirs]
    real = p.resolve()
    if not any(real.is_relative_to(d) for d in trusted):
        raise ConfigError(
            spec.file,
            key,
            f"{path} is not under a trusted folder (loading it would run its code)",
            f'add its folder to trusted_model_dirs, e.g. trusted_model_dirs = ["{p.parent}"]',
        )
