"""msgspec's validation errors in a person's words: the key (``models.recs.tiers[1].timeout_ms``), the
problem and the fix, with a suggestion for a misspelt key or kind."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from failsoft.config.base import Invalid
from failsoft.config.spec import TIER_KINDS
from failsoft.errors import ConfigError

_FIXES = [
    (re.compile(r"unknown field"), "remove the key or correct its spelling (docs/reference/config.md)"),
    (re.compile(r"missing required field"), "add the key"),
    (re.compile(r">= 1|> 0"), "use a positive number"),
    (re.compile(r"Invalid value .* kind|tag"), f"kind must be one of: {', '.join(TIER_KINDS)}"),
    (re.compile(r"matching regex"), "use letters, digits, '_', '-' or '.', at most 64 characters"),
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


def from_msgspec(
    file: str, err: msgspec.ValidationError, prefix: str = "", doc: Any = None, root: Any = None
) -> ConfigError:
    """msgspec's validation error as a ConfigError naming the file, the key and the fix. Its wording is
    msgspec's ("Expected `int`, got `str` - at `$.models...`"; tests/test_config.py pins it)."""
    text = str(err)
    m = re.match(r"^(.*?)(?: - at `(.*)`)?$", text, re.S)
    problem, at = (m.group(1), m.group(2)) if m else (text, None)
    key = _key(at or "")
    if prefix:
        key = f"{prefix}{key}" if key.startswith("[") or not key else f"{prefix}.{key}"
    rule = err.__cause__
    if isinstance(rule, Invalid):  # a table's own rule (its __post_init__): the field and the fix it gave
        key = f"{key}.{rule.field}" if rule.field and key else rule.field or key
        return ConfigError(file, key, rule.problem, rule.fix)
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
        hint = suggest(got, TIER_KINDS)
        fix = f"kind must be one of: {', '.join(TIER_KINDS)}" + (f"; {hint}" if hint else "")
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
