"""The tables of the serving process in portfolio.toml: ``[server]`` (HTTP limits, the models' loading and
memory budget), ``[store]`` (the state store and the prediction log) and ``[shadow]`` (mirroring)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from failsoft.config.base import Invalid, PositiveFloat, PositiveInt, _Spec


class ShadowSpec(_Spec, frozen=True):
    """Mirroring: copies waiting per candidate (more are dropped and counted, never waited on), the
    most copies sent to a candidate in one call when they pile up, and how long copies pile up before
    the candidates get them (longer: fewer, bigger calls; the answers are logged, never waited on)."""

    queue: PositiveInt = 10_000  # copies waiting per candidate (more are dropped, counted)
    max_batch: PositiveInt = 256  # the most copies in one call
    linger_ms: PositiveFloat = 5.0  # how long copies pile up before they are sent


class StreamSpec(_Spec, frozen=True):
    """``[store.stream]``: the JetStream stream a ``log = "nats://..."`` publishes to (store/stream.py)."""

    name: str = "FAILSOFT_PREDICTIONS"  # made at the first connection when missing
    subject: str = "failsoft.predictions"  # messages go to SUBJECT.batch, or SUBJECT.MODEL one at a time
    # "batch": a batch of answers a message (the CloudEvents JSON batch format); "single": an answer a
    # message (consumers can filter by model; a few times slower)
    events: Literal["batch", "single"] = "batch"
    # The stream drops a message id it has seen within this many seconds: a batch replayed after an
    # outage up to this long is kept once (the broker holds one id a batch for the window).
    duplicate_window_s: PositiveFloat = 900.0
    max_pending: PositiveInt = 4000  # messages published and not yet acknowledged, at most

    def __post_init__(self) -> None:
        for field in ("name", "subject"):
            value = getattr(self, field)
            if not value or any(c in value for c in " *>\t") or (field == "name" and "." in value):
                fix = "use letters, digits, - and _ (and dots between a subject's tokens)"
                raise Invalid(field, f"{value!r} is not a valid NATS {field}", fix)


class StoreSpec(_Spec, frozen=True):
    # sqlite:///PATH or postgresql://...; default: SQLite in data_dir. FAILSOFT_STORE_URL overrides it.
    url: str | None = None
    # Where the prediction log goes: the store (default), or a NATS JetStream stream, "nats://host:4222"
    # (store/stream.py); `failsoft log land` lands the stream as Parquet in `lake`.
    log: str | None = None
    # The lake's folder (Parquet, by model and hour; relative to the file): `failsoft log land` writes it,
    # `failsoft export`, `failsoft shadow` and the offline monitor commands read it.
    lake: str | None = None
    stream: StreamSpec = msgspec.field(default_factory=StreamSpec)
    log_predictions: bool = True  # log every answer (the prediction log)
    log_inputs: bool = False  # log each request's inputs too
    batch_size: PositiveInt = 1000  # rows written in one batch
    flush_ms: PositiveInt = 200  # the longest a row waits to be written
    max_buffer: PositiveInt = 200_000  # rows held while the store is away (then spilled to disk)
    spill_max_mb: PositiveInt = 1024  # the spill file's most size
    retention_days: Annotated[float, Meta(ge=0)] = 30.0  # older rows are deleted (0: kept)
    poll_ms: PositiveInt = 500  # how often replicas look for state changes
    # Each answer's record also written to a local journal before the answer is sent, so a crash of the
    # serving process (kill -9) loses none (store/journal.py); costs a write call per answer.
    journal: bool = False

    def __post_init__(self) -> None:
        if self.log is not None and not self.log.startswith(("nats://", "tls://")):
            raise Invalid("log", f"{self.log!r} is not a stream URL",
                          'write it as nats://host:4222, or leave it out to log to the store')  # fmt: skip


class ServerSpec(_Spec, frozen=True):
    max_body_bytes: PositiveInt = 1 << 20  # a request's body at most (413 past it)
    max_batch: PositiveInt = 1024  # rows in one request (OIP: checked from the tensors' shapes)
    # A client's request line and headers: at most this many bytes and headers (431 past either).
    max_header_bytes: PositiveInt = 65536
    max_headers: PositiveInt = 100  # and at most this many headers (431)
    # Seconds a client has to send a request's headers, and then its body (408 past either).
    header_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 30.0  # then its body within this (408)
    # Seconds an idle keep-alive connection stays open.
    keep_alive_s: PositiveFloat = 5.0
    # Open connections at most; more are refused at once with a 503 (the descriptor limit is raised to fit).
    max_connections: PositiveInt = 10000
    # TOML, one line per owner: alice = "TOKEN". FAILSOFT_TOKENS_FILE overrides it.
    tokens_file: str | None = None
    # Seconds a SIGTERM'd process keeps answering while /v2/health/ready says 503 (the time a load balancer
    # needs to take it out), before it stops; 0: it stops at once. 5-10 behind a load balancer.
    drain_s: Annotated[float, Meta(ge=0)] = 0.0
    # When in-process tiers load their models: "start" (every one before the server says it is ready) or
    # "first_use" (a model's on its first request, off the event loop; until it is ready the model is
    # answered by its next ready tier, its safe default at least, with the reason loading). Models with
    # preload = true load at start either way.
    load: Literal["start", "first_use"] = "start"
    # With load = "first_use": the most memory the models loaded on first use may hold, in MB, each
    # measured as it loads (what the process's resident size grew by, at least its file's size); past
    # it the least recently used is unloaded and its memory given back. 0: no limit.
    memory_budget_mb: Annotated[int, Meta(ge=0)] = 0
    # Which models get a latency histogram on /metrics (18 series each; at a thousand models most of a
    # scrape): "all", "none", or a number N: the N models with the most answers, the others summed into
    # one histogram labelled model="_other".
    latency_histograms: Literal["all", "none"] | PositiveInt = "all"
