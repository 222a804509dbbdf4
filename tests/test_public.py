"""The public surface checks itself (as httpx's tests/test_exported_members.py does): the names are written
once in failsoft/__init__.py (``_HOMES``, and again for type checkers under TYPE_CHECKING, held equal here),
each resolves to the object its home module defines; and the error tree in errors.py names every
FailsoftError the package defines, wherever it lives."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import failsoft
from failsoft import errors

TREE_LINE = re.compile(r"^[\s│├└─]*([A-Z]\w+)")


def test_public_names_are_written_once_and_resolve() -> None:
    tree = ast.parse(Path(failsoft.__file__).read_text())
    typed = {
        alias.asname or alias.name: stmt.module
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for stmt in node.body
        if isinstance(stmt, ast.ImportFrom) and stmt.module
        for alias in stmt.names
    }
    assert typed == failsoft._HOME, "the names for type checkers and those imported when used differ"
    assert failsoft.__all__ == sorted(failsoft._HOME)
    for name in failsoft.__all__:
        assert getattr(failsoft, name) is getattr(importlib.import_module(failsoft._HOME[name]), name)


def test_the_error_tree_names_every_failsoft_error() -> None:
    for info in pkgutil.walk_packages(failsoft.__path__, "failsoft."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: set[str] = set()
    todo = [errors.FailsoftError]
    while todo:
        kind = todo.pop()
        found.add(kind.__name__)
        todo.extend(kind.__subclasses__())
    drawn = {m.group(1) for line in (errors.__doc__ or "").splitlines() if (m := TREE_LINE.match(line))}
    missing = sorted(name for name in found if name not in drawn)
    assert missing == [], f"add them to the tree in errors.py: {missing}"
