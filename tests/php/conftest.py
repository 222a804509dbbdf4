"""The PHP side: the client library's PHPUnit suite against a real gateway started here, and the WordPress
plugin on a real WordPress. PHP comes from the distribution (php-cli, php-curl, phpunit); without it these
tests skip, and under CI they fail."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from failsoft.demo.procs import Proc
from tests.portfolios import default_tier, model, python_tier, toml

ROOT = Path(__file__).resolve().parents[2]
PHP_CLIENT = ROOT / "clients" / "php"
TOP10 = [f"top-{i:02d}" for i in range(1, 11)]


def need(*commands: str, paths: tuple[Path, ...] = ()) -> None:
    """The commands (and paths) these tests need: a skip that says how to get them, a failure under CI."""
    missing = [c for c in commands if shutil.which(c) is None] + [str(p) for p in paths if not p.exists()]
    if missing:
        packages = "php-cli, php-curl, phpunit, wordpress, mariadb-server"
        why = f"{', '.join(missing)} not found (Debian's {packages}: .ci/php installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def portfolio_toml(state: Path) -> str:
    """``recs`` (ten items per user, a Top-10 default) and ``churn`` (x / 10, a base rate), in process."""
    recs = model(
        # a fresh gateway's first calls on a busy machine may pass the default 100 ms: these tests are
        # about the clients, so the tier gets most of the deadline
        python_tier("cpu", "tests.helpers:recommend", timeout_ms=400),
        default_tier(TOP10, name="top10"),
        inputs=({"name": "user_id", "min": 0},),
        output={"type": "list"},
        version="3",
        deadline_ms=500,
    )
    churn = model(
        python_tier("cpu", "tests.helpers:score", timeout_ms=400),
        default_tier(0.2, name="base-rate"),
        inputs=({"name": "x", "min": 0, "max": 10},),
        output={"type": "float", "min": 0, "max": 1},
        version="7",
        deadline_ms=500,
    )
    return toml({"recs": recs, "churn": churn}, data_dir=str(state))


def start_gateway(folder: Path, port: int | None = None) -> Proc:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "portfolio.toml"
    path.write_text(portfolio_toml(folder / "state"))
    cmd = [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning"]
    return Proc(cmd, "/v2/health/ready", folder / "gateway.log", port=port).start()


@pytest.fixture(scope="session")
def php_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    need("php")
    gw = start_gateway(tmp_path_factory.mktemp("php-gateway"))
    yield gw
    gw.stop()
