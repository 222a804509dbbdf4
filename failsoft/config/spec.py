"""The schema of portfolio.toml: frozen Structs, each key with its meaning and default, and each rule about
one table in that table's ``__post_init__`` (rules that span tables are in config/rules.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from failsoft.config.base import Invalid, Name, PositiveFloat, PositiveInt, _http_url, _Spec
from failsoft.config.process import ServerSpec, ShadowSpec, StoreSpec
from failsoft.env import WEBHOOK_SECRET


class BreakerSpec(_Spec, frozen=True):
    window: PositiveInt = 20  # the last calls the breaker judges
    min_calls: PositiveInt = 10  # calls in the window before it may open
    # the share of failures (errors, timeouts) that opens it
    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    open_ms: PositiveInt = 5000  # how long it stays open (calls skip the tier, reason circuit_open)
    half_open_probes: PositiveInt = 1  # calls let through to test the tier before it closes again

    def __post_init__(self) -> None:
        if self.min_calls > self.window:
            raise Invalid("min_calls", "cannot exceed breaker.window", "lower min_calls or raise window")


class FeatureSpec(_Spec, frozen=True):
    name: Name  # the input's name in a request
    # what a value must be (a corrupt one gets the default path, reason invalid_input)
    type: Literal["float", "int", "bool", "string"] = "float"
    required: bool = True  # a request without it is invalid (unless a default is given)
    min: float | None = None  # values below are invalid
    max: float | None = None  # values above are invalid
    categories: list[str] | None = None  # string inputs: the values allowed
    default: float | int | bool | str | None = None  # used when the input is missing and not required

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise Invalid("min", f"min {self.min} > max {self.max}", "swap them")
        if self.categories is not None and self.type != "string":
            fix = 'set type = "string" or remove categories'
            raise Invalid("categories", "categories apply to string features", fix)


class OutputSpec(_Spec, frozen=True):
    # what an answer must be; any other is invalid_output and the next tier answers
    type: Literal["float", "int", "string", "list", "vector", "any"] = "any"
    min: float | None = None  # numbers: the least valid answer
    max: float | None = None  # numbers: the most valid answer
    length: PositiveInt | None = None  # vectors: their exact length
    min_length: Annotated[int, Meta(ge=0)] = 1  # lists: the fewest items
    max_length: PositiveInt | None = None  # lists: the most items


class _CallTier(_Spec, frozen=True, kw_only=True):
    name: Name  # the tier's name in answers, metrics and the log
    timeout_ms: PositiveInt = 100  # one call's limit (then reason timeout and the next tier)
    max_concurrency: PositiveInt = 32  # calls in flight at once (more: reason overloaded)
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
    target: str | None = None  # a callable or model object: "package.module:name"
    path: str | None = None  # a model file: .onnx, .joblib/.pkl, LightGBM .txt (in trusted_model_dirs)
    # how the model is called (auto: predict_proba, else predict, else the call)
    method: Literal["auto", "predict_proba", "predict", "call"] = "auto"
    column: int | None = None  # predict_proba's column that is the answer (default 1 for two classes)
    call: Literal["row", "batch"] = "row"  # row: one call a row; batch: one call with every row
    compile: bool = True  # linear models and trees as numpy arithmetic (answers checked equal at load)
    # "process": in worker processes of its own (a call past its timeout kills and replaces its worker)
    run: Literal["auto", "thread", "inline", "process"] = "auto"
    # run = "process": how many worker processes (the tier's concurrency limit then)
    processes: PositiveInt = 2
    # run = "process": the most memory each worker may hold, in MB (its data size: the model, the libraries
    # and what a call allocates). A model that grows past it fails that call (the tier's fallback answers)
    # and its worker is replaced by a fresh one: the limit stops it, not the kernel's OOM killer.
    max_memory_mb: PositiveInt | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.path is None):
            raise Invalid("", "set exactly one of target and path", 'e.g. target = "pkg.mod:predict"')
        if self.max_memory_mb is not None and self.run != "process":
            fix = 'set run = "process" (a worker process of its own can be held to a limit; a thread cannot)'
            raise Invalid("max_memory_mb", 'applies to run = "process" only', fix)
        if self.target is not None and ":" not in self.target:
            fix = 'write it as "package.module:name"'
            raise Invalid("target", f"{self.target!r} is not module:attribute", fix)


class OipTierSpec(_CallTier, frozen=True, tag="oip", tag_field="kind"):
    url: str  # the engine's root, e.g. http://gpu-box:8000
    model_name: str  # the model's name on the engine
    model_version: str | None = None  # a version in the path (/versions/V/infer)
    # tensor: one [rows, features] tensor; features: one tensor per input
    input_mode: Literal["tensor", "features"] = "tensor"
    input_name: str = "input"  # the tensor's name (input_mode tensor)
    datatype: Literal["FP64", "FP32", "INT64", "INT32"] = "FP64"  # the tensor's datatype
    output_name: str | None = None  # the output to read (default: the first)
    # a model answering a row per class (predict_proba's [n, 2]): which column is the answer (1: P(class 1))
    column: int | None = None
    # request-level parameters sent with every call (MLServer's features mode needs content_type = "pd")
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    pool_size: PositiveInt = 100  # keep-alive connections to the engine

    def __post_init__(self) -> None:
        _http_url("url", self.url)


class HttpTierSpec(_CallTier, frozen=True, tag="http", tag_field="kind"):
    url: str  # the endpoint to POST to
    # the JSON sent: "$inputs", "$row", "$rows" and "$id" are filled in
    body: Any = msgspec.field(default_factory=lambda: {"inputs": "$inputs"})
    output_path: str = "outputs"  # where the answer is in the reply (dotted, e.g. result.score)
    headers: dict[str, str] = msgspec.field(default_factory=dict)  # sent with every call
    batch: bool = False  # one call with every row ($rows) rather than one per row
    pool_size: PositiveInt = 100  # keep-alive connections to the endpoint

    def __post_init__(self) -> None:
        _http_url("url", self.url)

    def row_limit(self) -> int:
        # one connection a row: more rows than connections cannot go in one round
        return self.max_rows or (sys.maxsize if self.batch else self.pool_size)


class SageMakerTierSpec(_CallTier, frozen=True, tag="sagemaker", tag_field="kind"):
    """An Amazon SageMaker real-time endpoint, called with boto3's sagemaker-runtime InvokeEndpoint
    (credentials from the usual chain: environment, shared files, the instance's role)."""

    endpoint: str  # the endpoint's name
    region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION / the shared config
    variant: str | None = None  # TargetVariant: one production variant rather than the traffic split
    # how rows are sent (text/csv: one line a row)
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

    def __post_init__(self) -> None:
        _http_url("endpoint_url", self.endpoint_url, "https://host")
        if self.content_type == "text/csv" and self.body != "$matrix":
            raise Invalid("body", "a CSV body is one line a row", "remove body, or send JSON")


class DefaultTierSpec(_Spec, frozen=True, tag="default", tag_field="kind"):
    name: Name = "default"  # the tier's name in answers
    value: Any = None  # the safe default itself (a number, a list such as a Top-10)
    source: str | None = None  # or a CSV/Parquet file of events: its most frequent items (refreshed)
    item_column: str = "item"  # source: the column of items
    count_column: str | None = None  # source: a column of counts (default: one per row)
    top_n: PositiveInt = 10  # source: how many items
    refresh_s: PositiveFloat = 300.0  # source: how often it is read again

    def __post_init__(self) -> None:
        if self.value is None and self.source is None:
            raise Invalid("", "a default needs a value or a source", "set value = ... or source = FILE")


TierSpec = PythonTierSpec | OipTierSpec | HttpTierSpec | SageMakerTierSpec | DefaultTierSpec
CandidateSpec = PythonTierSpec | OipTierSpec | HttpTierSpec | SageMakerTierSpec
# the tier kinds, from their one definition (each Struct's tag)
TIER_KINDS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in get_args(TierSpec))

Metric = Literal["auc", "accuracy", "log_loss", "brier", "mae", "rmse", "hit_rate"]
METRICS: tuple[str, ...] = get_args(Metric)


class PromotionSpec(_Spec, frozen=True):
    """When a shadow candidate has proved itself (every rule must pass for ``failsoft promote``)."""

    min_shadow_s: Annotated[float, Meta(ge=0)] = 7 * 86400.0  # at least this long in shadow (a week)
    min_labelled: Annotated[int, Meta(ge=0)] = 500  # at least this many of its answers with labels
    metric: Metric = "auc"  # what it is judged on against the primary
    # hit_rate: was the label among the first k items served
    k: PositiveInt = 10
    # non-inferiority: the 95% interval's lower bound of the improvement must be >= -margin
    margin: Annotated[float, Meta(ge=0)] = 0.0
    max_error_rate: Annotated[float, Meta(ge=0, le=1)] = 0.01  # its share of errors at most
    max_timeout_rate: Annotated[float, Meta(ge=0, le=1)] = 0.01  # its share of timeouts at most
    max_p99_ms: PositiveFloat | None = None  # its p99 latency at most
    require_approval: bool = False  # a person approves in the audit queue


Share = Annotated[float, Meta(ge=0, le=1)]


class DriftSpec(_Spec, frozen=True):
    """What counts as drift in one window (or offline chunk). A feature drifts when one of its ``tests``
    rejects "same distribution as the reference" at family-wise level ``alpha`` (Holm's correction over
    every test of every feature and the predictions, so 50 features do not alarm on noise) and its PSI
    also reaches ``min_psi`` (a significant but immaterial shift in a big window is not an alarm). Data
    quality: the missing share rising by more than ``max_missing`` over the reference's, values outside
    the reference's range, categories it never saw, requests rejected as invalid."""

    # the tests run on each feature
    tests: list[Literal["psi", "ks", "chi2"]] = msgspec.field(default_factory=lambda: ["psi", "ks", "chi2"])
    alpha: Annotated[float, Meta(gt=0, lt=1)] = 0.01  # the family-wise level, over every test (Holm)
    min_psi: Annotated[float, Meta(ge=0)] = 0.1  # a significant shift must also reach this PSI
    min_rows: PositiveInt = 30  # the fewest rows a window is judged on
    max_missing: Share = 0.1  # the missing share may rise by this over the reference's
    max_out_of_range: Share = 0.05  # values outside the reference's range: at most this share
    max_unseen: Share = 0.05  # categories the reference never saw: at most this share
    max_invalid: Share = 0.1  # requests rejected as invalid: at most this share
    prediction: bool = True  # also test the predictions' distribution


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

    profile: str | None = None  # the reference: a file made by failsoft profile
    # or learned from the first live requests (0: a profile is needed)
    learn_rows: Annotated[int, Meta(ge=0)] = 0
    window_rows: PositiveInt = 5000  # a window closes after this many requests
    window_s: PositiveFloat = 60.0  # or after this long, once it holds min_rows
    max_rows_per_s: Annotated[float, Meta(ge=0)] = 1000.0  # past this rate requests are sampled (0: keep all)
    warn_after: PositiveInt = 1  # drifted windows in a row before warning
    quarantine_after: PositiveInt = 3  # drifted windows in a row before quarantine
    min_span_s: Annotated[float, Meta(ge=0)] = 60.0  # a quarantine's drifted windows must span this long
    recover_after: PositiveInt = 3  # clean windows in a row that bring it back
    recovery: Literal["auto", "manual"] = "auto"  # auto, or manual: a person restores it
    action: Literal["quarantine", "warn"] = "quarantine"  # what drift does: quarantine, or warn only
    # binary: scores are P(positive); the others are read from the output type when "auto"
    task: Literal["auto", "binary", "multiclass", "regression", "ranking"] = "auto"
    k: PositiveInt = 10  # ranking: the first k items count
    threshold: Annotated[float, Meta(ge=0, le=1)] = 0.5  # binary: a score above it is positive
    keep_windows: PositiveInt = 100  # windows kept for the console and /monitor


class AuditSpec(_Spec, frozen=True):
    """When a person is asked to look: a fallback episode longer than ``after_s``, or a default older
    than ``default_max_age_s`` (0: never)."""

    after_s: PositiveFloat = 1800.0  # a fallback episode longer than this opens an audit item
    # a model is in an episode above this degraded share
    degraded_share: Annotated[float, Meta(ge=0, lt=1)] = 0.5
    window_s: PositiveFloat = 60.0  # the share is measured over this window
    min_answers: Annotated[int, Meta(ge=0)] = 5  # answers in the window before it is judged
    # a safe default older than this opens an item (0: never)
    default_max_age_s: Annotated[float, Meta(ge=0)] = 0.0
    webhook: str | None = None  # an URL told of every item opened (Standard Webhooks)
    # the environment variable holding the webhook's signing secret (unset: deliveries are not signed)
    webhook_secret_env: str = WEBHOOK_SECRET
    remind_after_s: PositiveFloat = 3600.0  # an open item is announced again after this


class FeatureUseSpec(_Spec, frozen=True):
    """Values a model reads from the online feature store, keyed by the table's entity fields in the
    request; older than ``max_age_s`` (on ``event_time``) means stale: the primary tier is skipped."""

    table: Name  # the feature table
    columns: list[str] | None = None  # the columns read (default: all)
    max_age_s: PositiveFloat | None = None  # older values are stale


class FeaturesSpec(_Spec, frozen=True):
    """Where feature tables are kept (default: ``<data_dir>/features``) and how often the online lookup
    looks for new rows."""

    dir: str | None = None  # where feature tables are kept
    refresh_s: PositiveFloat = 10.0  # how often the online lookup reads new rows


class ModelSpec(_Spec, frozen=True):
    version: str = "1"  # the model's version in answers and the log
    deadline_ms: PositiveInt = 100  # the whole request, every tier included
    inputs: list[FeatureSpec] = msgspec.field(default_factory=list)
    output: OutputSpec = msgspec.field(default_factory=OutputSpec)
    tiers: list[TierSpec] = msgspec.field(default_factory=list)
    # None: the portfolio's [audit] table
    audit: AuditSpec | None = None
    features: list[FeatureUseSpec] = msgspec.field(default_factory=list)
    candidates: list[CandidateSpec] = msgspec.field(default_factory=list)
    promotion: PromotionSpec = msgspec.field(default_factory=PromotionSpec)
    monitor: MonitorSpec | None = None
    # With [server] load = "first_use": load this model's in-process tiers at start anyway (a model that
    # must answer from its own tier from the first request), never unloaded for the memory budget.
    preload: bool = False


class PortfolioSpec(_Spec, frozen=True):
    models: dict[Name, ModelSpec]
    data_dir: str = "failsoft-data"  # the state folder: SQLite, spill, journal, last good defaults
    # pickles (joblib) load only from these: unpickling runs code
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

    def log_url(self) -> str:
        """Where the prediction log is written: [store].log (a stream), else the store."""
        return self.store.log or self.store_url()

    def lake_dir(self) -> Path | None:
        return self.resolve(self.store.lake) if self.store.lake else None

    def store_url(self) -> str:
        """The store's URL: [store].url (relative SQLite paths against the file), else SQLite in data_dir."""
        url = self.store.url
        if url is None:
            return f"sqlite:///{self.resolve(self.data_dir) / 'failsoft.db'}"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return f"sqlite:///{self.resolve(url.removeprefix('sqlite:///'))}"
        return url
