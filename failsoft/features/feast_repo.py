"""Feast feature repositories as a source: each feature view over a file (``FileSource``) becomes a
feature table, with Feast's own column mapping: its join keys as the entity, ``timestamp_field`` as the
event time, ``created_timestamp_column`` as when the row landed, and its TTL.

Feast's point-in-time join agrees with failsoft's only with ``filter_by_created_timestamp=True`` (it
otherwise uses a value whatever its created stamp, the join on event time alone that leaks late rows).
Reading a repository imports its Python definitions, as ``feast apply`` does: Feast must be installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failsoft.errors import ConfigError


@dataclass(frozen=True)
class FeastView:
    name: str
    path: str
    entity: list[str]
    event_time: str
    available_at: str | None
    ttl_s: float | None


@contextlib.contextmanager
def _inside(repo: Path) -> Iterator[None]:
    """Feast imports a repository's files as modules relative to the working folder."""
    old = os.getcwd()
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(old)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def feast_views(repo: str | Path) -> tuple[list[FeastView], list[str]]:
    """The file-backed feature views of a Feast repository, and a note for each view it cannot read."""
    root = Path(repo).resolve()
    if not (root / "feature_store.yaml").exists():
        raise ConfigError(str(root), "feature_store.yaml", "not a Feast repository", "point at its folder")
    try:
        from feast.repo_operations import parse_repo
    except ImportError:
        raise ConfigError(
            str(root), "", "reading a Feast repository needs Feast", "pip install feast (or ingest its files)"
        ) from None
    try:
        with _inside(root):
            contents = parse_repo(root)
    except Exception as err:
        raise ConfigError(
            str(root), "", f"Feast could not read its definitions: {err}", "run feast plan"
        ) from err
    keys = {e.name: [e.join_key] for e in contents.entities}
    views, skipped = [], []
    for fv in contents.feature_views:
        src: Any = fv.batch_source
        if type(src).__name__ != "FileSource":
            skipped.append(f"{fv.name}: its source is a {type(src).__name__}, not a file")
            continue
        path = Path(src.path)
        entity = [k for name in fv.entities for k in keys.get(name, [name])]
        ttl = fv.ttl.total_seconds() if fv.ttl else 0
        if src.field_mapping:
            skipped.append(f"{fv.name}: its source renames columns (field_mapping): ingest the file by hand")
            continue
        views.append(
            FeastView(
                fv.name,
                str(path if path.is_absolute() else root / path),
                entity,
                src.timestamp_field,
                src.created_timestamp_column or None,
                ttl or None,
            )
        )
    return views, skipped
