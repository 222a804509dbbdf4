"""What every table of portfolio.toml is made of: the frozen Struct base, the error a table's own rule
raises, and the types of names and positive numbers."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
NAME_RE = re.compile(_NAME_PATTERN)
Name = Annotated[str, Meta(pattern=_NAME_PATTERN)]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Invalid(ValueError):
    """A rule about one table, broken: raised in its Struct's ``__post_init__`` (msgspec turns it into a
    validation error with the table's location; config/messages.py reads ``field`` and ``fix`` from it)."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.field, self.problem, self.fix = field, problem, fix


def _http_url(field: str, url: str | None, example: str = "http://host:port") -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise Invalid(field, f"{url!r} is not an http(s) URL", f"write it as {example}")
