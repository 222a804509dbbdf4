"""Portfolio files for tests, built from Python values (written by tomli-w), so a test says only what is
particular to it.

>>> text = toml(models={"m": model(python_tier("cpu", "tests.helpers:score"), default_tier(0.25))})
>>> "[[models.m.tiers]]" in text
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

Table = dict[str, Any]

BREAKER = {"window": 10, "min_calls": 4, "failure_rate": 0.5, "open_ms": 300}


def python_tier(name: str, target: str | None = None, path: str | Path | None = None, **keys: Any) -> Table:
    """An in-process tier: a ``module:function`` target or a model file."""
    where = {"target": target} if target is not None else {"path": str(path)}
    return {"name": name, "kind": "python", **where, **keys}


def oip_tier(name: str, url: str, model_name: str, **keys: Any) -> Table:
    return {"name": name, "kind": "oip", "url": url, "model_name": model_name, **keys}


def default_tier(value: Any = None, **keys: Any) -> Table:
    """The safe default: a static ``value``, or computed from a ``source`` given in ``keys``."""
    return {"kind": "default", **({"value": value} if value is not None else {}), **keys}


def model(
    *tiers: Table,
    inputs: tuple[str | Table, ...] = ("x",),
    output: Table | None = None,
    deadline_ms: int = 60,
    candidates: tuple[Table, ...] = (),
    **keys: Any,
) -> Table:
    """A model: its tiers in order (the last is usually ``default_tier``), inputs by name or as tables."""
    table: Table = {"deadline_ms": deadline_ms, **keys}
    table["inputs"] = [{"name": i} if isinstance(i, str) else i for i in inputs]
    if output is not None:
        table["output"] = output
    table["tiers"] = list(tiers)
    if candidates:
        table["candidates"] = list(candidates)
    return table


def toml(models: dict[str, Table], **tables: Any) -> str:
    """The file's text: top-level keys and tables (``data_dir``, ``store``, ``server``, ``audit``...) and
    the models."""
    return tomli_w.dumps({**tables, "models": models})


def write(path: Path, models: dict[str, Table], **tables: Any) -> Path:
    """Write the file at ``path`` (a folder: ``portfolio.toml`` in it, with ``data_dir`` there too unless
    given) and return its path."""
    if path.suffix != ".toml":
        tables.setdefault("data_dir", str(path / "state"))
        path = path / "portfolio.toml"
    path.write_text(toml(models, **tables))
    return path
