"""The frames a ``run = "process"`` tier and its worker processes exchange: a 4-byte little-endian length,
then a msgpack document (tiers/worker.py says what the documents hold)."""

from __future__ import annotations

import struct
from typing import Any

import msgspec

LENGTH = struct.Struct("<I")
# The fork server's socket (tiers/forks.py): a request is a worker's arguments (at most MAX_ARGS bytes,
# with its stdin and stdout as SCM_RIGHTS), an answer the child's pid (with its pidfd).
MAX_ARGS = 64 << 10
PID = struct.Struct("<i")
READY = b"ready"  # the server's first message: it has imported what workers need


def read_frame(stream: Any) -> Any:
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (n,) = LENGTH.unpack(head)
    return msgspec.msgpack.decode(stream.read(n))


def frame(doc: Any) -> bytes:
    body = msgspec.msgpack.encode(doc, enc_hook=_fallback)
    return LENGTH.pack(len(body)) + body


def _fallback(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)
