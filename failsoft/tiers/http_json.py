"""A plain JSON endpoint: the body is built from a template, the answer read from a dotted path.

In the template, the string ``"$inputs"`` becomes the row's feature object, ``"$row"`` the list of its
values in feature order, ``"$rows"`` the list of row objects (with ``batch = true``), ``"$id"`` the
request id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from failsoft.config import HttpTierSpec
from failsoft.errors import InvalidOutput
from failsoft.tiers.remote import RemoteBackend
from failsoft.types import TierKind
from failsoft.validation import Batch


def fill(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str):
        return values.get(template, template) if template.startswith("$") else template
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template


def dig(doc: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise InvalidOutput(f"response has nothing at {path!r}") from None
    return doc


class HttpBackend(RemoteBackend):
    kind = TierKind.HTTP

    def __init__(self, spec: HttpTierSpec) -> None:
        super().__init__(spec.name, spec.pool_size, spec.headers)
        self.spec = spec

    async def _one(self, row: dict[str, Any], names: tuple[str, ...], request_id: str) -> Any:
        body = fill(self.spec.body, {"$inputs": row, "$row": [row.get(n) for n in names], "$id": request_id})
        return dig(await self.post_json(self.spec.url, body), self.spec.output_path)

    async def call(self, batch: Batch, request_id: str) -> list[Any]:
        if self.spec.batch:
            body = fill(self.spec.body, {"$rows": batch.rows, "$inputs": batch.rows, "$id": request_id})
            out = dig(await self.post_json(self.spec.url, body), self.spec.output_path)
            if not isinstance(out, list) or len(out) != len(batch):
                raise InvalidOutput(f"expected a list of {len(batch)} answers at {self.spec.output_path!r}")
            return out
        if len(batch) == 1:
            return [await self._one(batch.rows[0], batch.names, request_id)]
        return list(await asyncio.gather(*(self._one(r, batch.names, request_id) for r in batch.rows)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.spec.url}
