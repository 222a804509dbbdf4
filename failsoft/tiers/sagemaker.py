"""An Amazon SageMaker real-time endpoint: InvokeEndpoint through boto3's ``sagemaker-runtime`` client.

boto3 is synchronous: calls run in a pool of the tier's own threads (one per concurrent call, as many
pooled connections), so the event loop never waits on one. The client makes one attempt (the chain
decides what happens next, within the deadline) and times out with the tier. Requests are signed with
SigV4 from the usual credential chain (environment, shared files, the instance's role). Bodies are JSON (a
template over the rows) or CSV (one line a row); answers are read the same way, one per row, and with
``column`` that column of each row.
"""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any

import msgspec

from failsoft.config import SageMakerTierSpec
from failsoft.errors import ConfigError, InvalidOutput, TierRejected, TierTimeout, TierUnavailable
from failsoft.tiers.base import Backend, Done, in_thread
from failsoft.tiers.http_json import dig, fill
from failsoft.tiers.remote import TRANSIENT
from failsoft.tiers.threads import Threads
from failsoft.types import TierKind
from failsoft.validation import Batch

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def csv_body(batch: Batch) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in batch.rows:
        writer.writerow(["" if row.get(n) is None else row.get(n) for n in batch.names])
    return out.getvalue().encode()


def csv_answers(raw: bytes) -> list[Any]:
    """One answer per line: a number, or a list of numbers for a line with several values."""
    rows: list[Any] = []
    for line in csv.reader(io.StringIO(raw.decode("utf-8", "replace"))):
        if not line:
            continue
        try:
            values = [float(v) for v in line]
        except ValueError:
            raise InvalidOutput(f"CSV answer line {line!r} is not numbers") from None
        rows.append(values[0] if len(values) == 1 else values)
    return rows


class SageMakerBackend(Backend):
    kind = TierKind.SAGEMAKER

    def __init__(self, spec: SageMakerTierSpec, file: str, key: str) -> None:
        self.name = spec.name
        self.spec = spec
        self._file, self._key = file, key
        self._client: Any = None
        self._executor: Threads | None = None
        self._errors: Any = None

    async def start(self) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise ConfigError(
                self._file,
                f"{self._key}.kind",
                "a sagemaker tier needs boto3",
                "pip install 'failsoft[sagemaker]'",
            ) from None
        spec = self.spec
        wait_s = max(spec.timeout_ms / 1000, 0.05)
        config = botocore.config.Config(
            region_name=spec.region,
            retries={"total_max_attempts": 1, "mode": "standard"},  # the chain falls back; no retry
            connect_timeout=wait_s,
            read_timeout=wait_s,
            max_pool_connections=spec.max_concurrency,
            tcp_keepalive=True,
        )
        try:
            self._client = boto3.session.Session().client(
                "sagemaker-runtime", endpoint_url=spec.endpoint_url, config=config
            )
        except botocore.exceptions.NoRegionError:
            raise ConfigError(
                self._file,
                f"{self._key}.region",
                "no AWS region for the sagemaker tier",
                'set region = "eu-west-1" (say) on the tier, or AWS_REGION',
            ) from None
        self._errors = botocore.exceptions
        self._executor = Threads(spec.max_concurrency, thread_name_prefix=f"tier-{self.name}")

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def request_body(self, batch: Batch) -> bytes:
        if self.spec.content_type == "text/csv":
            return csv_body(batch)
        matrix = [[row.get(n) for n in batch.names] for row in batch.rows]
        return _encode(fill(self.spec.body, {"$matrix": matrix, "$rows": batch.rows}))

    def invoke(self, body: bytes) -> bytes:
        """One InvokeEndpoint call, in a thread of the tier's pool; failures as TierErrors."""
        spec = self.spec
        args: dict[str, Any] = {
            "EndpointName": spec.endpoint,
            "Body": body,
            "ContentType": spec.content_type,
            "Accept": spec.accept or spec.content_type,
        }
        if spec.variant:
            args["TargetVariant"] = spec.variant
        errors = self._errors
        try:
            reply = self._client.invoke_endpoint(**args)
            data: bytes = reply["Body"].read()
            return data
        except errors.ClientError as err:
            meta = err.response.get("ResponseMetadata", {})
            status = int(err.response.get("OriginalStatusCode") or meta.get("HTTPStatusCode") or 0)
            said = err.response.get("Error", {})
            message = f"{said.get('Code', '')}: {said.get('Message', err)}"
            if 400 <= status < 500 and status not in TRANSIENT:
                raise TierRejected(
                    f"HTTP {status} from endpoint {spec.endpoint} (the request is wrong for it): {message}"
                ) from None
            raise TierUnavailable(
                f"HTTP {status} from endpoint {spec.endpoint}: {message}", status or None
            ) from None
        except errors.NoCredentialsError as err:
            raise TierRejected(f"no AWS credentials for endpoint {spec.endpoint}: {err}") from None
        except (errors.ReadTimeoutError, errors.ConnectTimeoutError) as err:
            raise TierTimeout(f"endpoint {spec.endpoint}: {err}") from None
        except errors.BotoCoreError as err:
            raise TierUnavailable(f"{type(err).__name__} calling endpoint {spec.endpoint}: {err}") from None

    def answers(self, raw: bytes, n: int) -> list[Any]:
        spec = self.spec
        if (spec.accept or spec.content_type) == "text/csv":
            rows = csv_answers(raw)
        else:
            try:
                rows = dig(_decode(raw), spec.output_path)
            except msgspec.DecodeError:
                raise InvalidOutput(
                    f"answer from endpoint {spec.endpoint} is not JSON: {raw[:80]!r}"
                ) from None
        if not isinstance(rows, list) or len(rows) != n:
            raise InvalidOutput(f"expected a list of {n} answers at {spec.output_path or 'the top'!r}")
        if spec.column is None:
            return rows
        try:
            return [row[spec.column] for row in rows]
        except (TypeError, IndexError, KeyError):
            raise InvalidOutput(f"column {spec.column} of the answers does not exist: {rows[0]!r}") from None

    async def predict(self, batch: Batch, request_id: str, done: Done) -> list[Any]:
        assert self._executor is not None, "backend not started"
        # the slot frees when the call really ends (boto3's own timeout), not when the chain gives up on it
        raw = await in_thread(self._executor, self.invoke, self.request_body(batch), done)
        return self.answers(raw, len(batch))

    def describe(self) -> dict[str, Any]:
        url = self.spec.endpoint_url or "aws"
        return {**super().describe(), "url": f"{url}/endpoints/{self.spec.endpoint}"}
