"""Reading portfolio.toml: TOML, the environment's override of the store, then the schema and the rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import tomli as tomllib  # the standard library's parser, compiled

from failsoft.config.base import NAME_RE
from failsoft.config.messages import from_msgspec
from failsoft.config.rules import check
from failsoft.config.spec import ModelSpec, PortfolioSpec
from failsoft.env import DATA_DIR, DRAIN_S, STORE_URL
from failsoft.env import environ as environment
from failsoft.errors import ConfigError


def parse(raw: dict[str, Any], file: str = "portfolio.toml", base_dir: str = ".") -> PortfolioSpec:
    """Validate a parsed TOML document. Raises ConfigError naming file, key and fix."""
    models_raw = raw.get("models")
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError(file, "models", "no models declared", "add at least one [models.NAME] table")
    try:
        top = msgspec.convert(
            {**raw, "models": {}, "base_dir": base_dir, "file": file}, PortfolioSpec, strict=True
        )
    except msgspec.ValidationError as err:
        raise from_msgspec(file, err, doc=raw, root=PortfolioSpec) from None
    models: dict[str, ModelSpec] = {}
    for name, model in models_raw.items():
        if not NAME_RE.match(name):
            raise ConfigError(
                file,
                f"models.{name}",
                "not a valid model name",
                "use letters, digits, '_', '-' or '.', at most 64 characters",
            )
        try:
            models[name] = msgspec.convert(model, ModelSpec, strict=True)
        except msgspec.ValidationError as err:
            raise from_msgspec(file, err, prefix=f"models.{name}", doc=model, root=ModelSpec) from None
    spec = msgspec.structs.replace(top, models=models)
    check(spec)
    return spec


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> PortfolioSpec:
    """Read and validate a portfolio.toml file. ``FAILSOFT_STORE_URL`` in the environment (the one place
    failsoft reads it) overrides [store].url, so replicas can share a database without editing the file;
    ``FAILSOFT_DATA_DIR`` overrides ``data_dir`` (a container's volume, the file itself read-only) and
    ``FAILSOFT_DRAIN_S`` ``[server] drain_s`` (a deployment's grace period and its drain set together)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found", "pass the path of your portfolio.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(p), "", f"not valid TOML: {err}", "fix the TOML syntax at that line") from None
    env = environment() if environ is None else environ
    if env.get(STORE_URL):
        raw.setdefault("store", {})["url"] = env[STORE_URL]
    if env.get(DATA_DIR):
        raw["data_dir"] = env[DATA_DIR]
    if env.get(DRAIN_S):
        try:
            raw.setdefault("server", {})["drain_s"] = float(env[DRAIN_S])
        except ValueError:
            raise ConfigError(
                DRAIN_S, "", f"not a number of seconds: {env[DRAIN_S]!r}", "set it to e.g. 5"
            ) from None
    return parse(raw, file=str(p), base_dir=str(p.parent.resolve()))
