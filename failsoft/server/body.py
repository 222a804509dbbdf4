"""Reading what a client sends: one decode path for every request body, with one error for anything wrong.

Every body (predict, infer, labels, health, audit actions, promotions) goes through ``decode``:
- the fast path is msgspec's typed decoder;
- bodies with NaN/Infinity (which Python's ``json`` writes) are read too, so their corrupt values reach
  the input checks and are answered with the safe default rather than refused;
- nesting deeper than the interpreter allows is a 400, not a RecursionError;
- strings are made safe for every store and encoder: a lone UTF-16 surrogate (only the lenient path
  accepts one) and NUL (``\\u0000``: PostgreSQL's text and jsonb refuse it) become U+FFFD. Both can only
  come in as JSON escapes, so a body without them pays one byte search.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from failsoft.errors import InvalidRequest
from failsoft.text import scrub

__all__ = ["MAX_ID_CHARS", "check_id", "decode"]

T = TypeVar("T")
MAX_ID_CHARS = 256
_decode_any = msgspec.json.Decoder().decode


def _builtins(body: bytes) -> Any:
    """The body as plain Python values, NaN and Infinity allowed, strings scrubbed."""
    try:
        doc = _decode_any(body)
    except msgspec.MsgspecError:  # NaN, Infinity, 1e999 or a lone surrogate
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise InvalidRequest(f"body is not JSON: {err}") from None
    return scrub(doc)


def decode(body: bytes, kind: type[T], decoder: Callable[[bytes], T] | None = None) -> T:
    """``body`` as ``kind``; InvalidRequest (a 400) says what is wrong with it."""
    try:
        if decoder is not None and b"\\u0000" not in body:
            try:
                return decoder(body)
            except msgspec.MsgspecError:
                pass  # NaN, Infinity, a number beyond float or a lone surrogate; or a wrong shape, which
                # the lenient path below names
        return msgspec.convert(_builtins(body), kind)
    except msgspec.ValidationError as err:
        raise InvalidRequest(f"malformed request: {err}") from None
    except RecursionError:
        raise InvalidRequest("malformed request: JSON nested too deep") from None


# Content-Encoding -> zlib's window bits for it (gzip and zlib-wrapped deflate; "deflate" as sent raw by some
# clients is tried as raw when the zlib header is missing)
_WBITS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}


def inflate(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A compressed request body, decompressed; at most ``limit`` bytes come out (beyond: BodyTooLarge, so a
    small bomb cannot fill the memory); InvalidRequest for an encoding failsoft does not read or a body that
    is not what it says."""
    name = encoding.strip().lower()
    if name in {b"", b"identity"}:
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise InvalidRequest(
            f"Content-Encoding {name.decode('latin-1')!r} is not read: send gzip, deflate or none"
        )
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge
    except zlib.error as err:
        raise InvalidRequest(f"the body is not valid {name.decode('latin-1')} data: {err}") from None
    return out


class PredictRequest(msgspec.Struct):
    """A prediction request: ``inputs`` one row (an object, by input name) or a batch (a list of rows);
    ``id`` names the request in the log and in labels (else the ``X-Request-Id`` header, else the
    gateway's own)."""

    inputs: dict[str, Any] | list[Any]
    id: str | None = None


class BodyTooLarge(Exception):
    """A body over the limit, as sent or once decompressed."""


def check_id(request_id: str | None) -> None:
    """A client's request id is logged, echoed and joined with labels: printable and at most 256 chars."""
    if request_id is None:
        return
    if not request_id or len(request_id) > MAX_ID_CHARS or not request_id.isprintable():
        raise InvalidRequest(
            f"id must be 1 to {MAX_ID_CHARS} printable characters (got {len(request_id)} characters"
            f"{'' if request_id.isprintable() else ', some of them control characters'})"
        )
