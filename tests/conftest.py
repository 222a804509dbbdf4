"""Fixtures every test package may use: TOML files in a temporary folder, and a fresh PostgreSQL database
per run on 127.0.0.1:5432 (``FAILSOFT_TEST_PG`` names another server). Under CI a test that needs
PostgreSQL fails, not skips, when the server cannot be reached."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Real processes on loopback (a trained backend and a gateway in front of it), for every test package.
from tests.browser import browser  # noqa: F401 (fixture)
from tests.stack import models_dir, stack  # noqa: F401 (fixtures)


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "portfolio.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


ADMIN_URL = os.environ.get("FAILSOFT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unreachable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {why}")
    pytest.skip(f"PostgreSQL not reachable: {why}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    import psycopg

    name = f"failsoft_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as err:
        unreachable(str(err))
    base = ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
