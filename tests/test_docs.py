"""The documentation site: it builds strictly (a broken link or reference fails), the README stays a
landing page, and the reference made from the code agrees with the code: every portfolio.toml key it
documents is one the config accepts and the other way round, every key in the guides' examples is
documented, every metric a gateway exposes is listed, every Python example compiles."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import msgspec

from failsoft import config
from failsoft.reference import _structs, _tables, config_keys, metrics
from tests.http import get
from tests.stack import Proc

ROOT = Path(__file__).resolve().parent.parent
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    cmd = [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stderr and "INFO    -  Doc file" not in done.stderr, done.stderr[-3000:]
    pages = ["index.html", "guides/first-hour/index.html"]
    pages += [f"reference/{name}/index.html" for name in ("config", "cli", "http", "metrics", "environment")]
    for page in pages:
        assert (tmp_path / "site" / page).exists(), page


def test_the_readme_is_a_landing_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250, len(lines)


def test_every_documented_key_is_accepted_and_every_accepted_key_documented() -> None:
    keys = config_keys()
    for table, cls in _tables(config.PortfolioSpec):
        hints = typing.get_type_hints(cls)
        accepted = {f.encode_name for f in msgspec.structs.fields(cls) if not _structs(hints[f.name])}
        accepted -= {"base_dir", "file"} if cls is config.PortfolioSpec else set()
        tag = cls.__struct_config__.tag_field
        documented = set(keys[table]) - ({tag} if isinstance(tag, str) else set())
        assert documented == accepted, table
        assert all(meaning for _t, _d, meaning in keys[table].values()), f"{table}: a key without its meaning"


LISTS = {"inputs", "tiers", "candidates", "features"}  # arrays of tables
OPAQUE = {"parameters", "headers", "body", "value"}  # values that are tables of the user's own


def _name(path: str) -> str:
    return re.sub(r"^models\.[^.]+", "models.NAME", path)


def _pairs(doc: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """(table title, key) of every key in an example, titled as the reference titles them."""
    out = []
    for key, value in doc.items():
        here = f"{path}.{key}" if path else key
        if isinstance(value, list) and key in LISTS and all(isinstance(v, dict) for v in value):
            for item in value:
                kind = f' kind = "{item.get("kind")}"' if key in {"tiers", "candidates"} else ""
                for k, v in item.items():
                    if k == "breaker" and isinstance(v, dict):
                        out += [("[models.NAME.tiers.breaker]", b) for b in v]
                    else:
                        out.append((f"[[{_name(here)}]]{kind}", k))
        elif isinstance(value, dict) and key not in OPAQUE:
            out += _pairs(value, here)
        else:
            out.append((f"[{_name(path)}]" if path else "top level", key))
    return out


def test_every_key_in_the_guides_examples_is_documented() -> None:
    keys = config_keys()
    also: dict[str, list[str]] = {}
    list(_tables(config.PortfolioSpec, also=also))
    titles = {t: [t, *also.get(t, [])] for t in keys}  # a table and the other places of its kind
    known = {
        (name.replace("candidates", "tiers"), k) for t, ks in keys.items() for name in titles[t] for k in ks
    }
    seen = 0
    for guide in GUIDES:
        for block in re.findall(r"```toml\n(.*?)```", guide.read_text(), re.S):
            try:
                doc = tomllib.loads(block)
            except tomllib.TOMLDecodeError:
                continue  # a fragment (a line or two of a table shown elsewhere)
            if not set(doc) & {f.encode_name for f in msgspec.structs.fields(config.PortfolioSpec)}:
                continue  # another file's example (a tokens file)
            for table, key in _pairs(doc, ""):
                seen += 1
                assert (table.replace("candidates", "tiers"), key) in known, f"{guide.name}: {table} {key}"
    assert seen > 50


def test_every_metric_a_gateway_exposes_is_in_the_reference(stack: tuple[Proc, Proc]) -> None:
    text = get(stack[1].url + "/metrics").text
    exposed = {re.sub(r"_total$", "", m.group(1)) for m in re.finditer(r"^# TYPE (\w+) ", text, re.M)}
    documented = {name for name, *_ in metrics()}
    assert exposed <= documented, exposed - documented


def test_every_python_example_compiles() -> None:
    for guide in [ROOT / "README.md", *GUIDES]:
        for block in re.findall(r"```python\n(.*?)```", guide.read_text(), re.S):
            compile(block, str(guide), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
