"""Strings made safe for every store and encoder.

A lone UTF-16 surrogate (which Python's ``json`` accepts from a ``\\ud800`` escape) cannot be encoded as
UTF-8, and NUL cannot be stored by PostgreSQL (text or jsonb); either, arriving from a client or a model,
would otherwise fail an encoder or a write far from where it came in. Both become U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REPLACEMENT", "scrub"]

REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def scrub(doc: Any) -> Any:
    """``doc`` (plain values: str, list, tuple, dict) with every NUL and lone surrogate in its strings,
    keys included, replaced by U+FFFD."""
    if isinstance(doc, str):
        return _UNSAFE.sub(REPLACEMENT, doc)
    if isinstance(doc, list | tuple):
        return [scrub(v) for v in doc]
    if isinstance(doc, dict):
        return {scrub(k): scrub(v) for k, v in doc.items()}
    return doc
