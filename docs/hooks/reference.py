"""MkDocs hook: the pages made at every build. The home page is the README (its links into docs/ made
relative to the site); the reference pages come from the code (failsoft/reference.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from failsoft.reference import PAGES

ROOT = Path(__file__).resolve().parents[2]


def on_files(files: Files, config: Any) -> Files:
    home = (ROOT / "README.md").read_text().replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=home))
    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
