"""The house's shape, checked: no import cycle among failsoft's modules (every import counts, also those
inside functions and under TYPE_CHECKING), and no module past its size without a stated reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import failsoft

ROOT = Path(failsoft.__file__).parent
MAX_LINES = 400
# Modules allowed past MAX_LINES, and why (README, "Layout"): none.
LONG: dict[str, str] = {}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The failsoft modules ``name`` imports (``from failsoft.x import y`` counts as x.y when that is a
    module, else as x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    out.add(full)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ re-exporting its own modules is how packages are built, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert cycles(graph) == []


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_too_long() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONG
    }
    assert long == {}, f"split these, or say why in LONG: {long}"


def test_portfolio_is_small() -> None:
    assert len((ROOT / "portfolio.py").read_text().splitlines()) < 300


def test_the_log_writer_starts_light() -> None:
    """The writer process imports the store and nothing of serving: it starts in tens of milliseconds, so a
    gateway's log is written from its first second (a writer that imported the portfolio, scipy and the tiers
    took 1.3 s to start here, and over 3 s on a loaded machine)."""
    code = "import sys, failsoft.store.writer; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    heavy = {"numpy", "scipy", "failsoft.portfolio", "failsoft.tiers", "failsoft.monitor", "sklearn"}
    assert not heavy & loaded, sorted(heavy & loaded)
