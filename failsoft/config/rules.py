"""The rules of portfolio.toml that span tables: a chain's shape (a default last, and only last), names
unique across a model's tiers and candidates, features named once, model files under a trusted folder."""

from __future__ import annotations

from failsoft.config.spec import CandidateSpec, DefaultTierSpec, PortfolioSpec, PythonTierSpec
from failsoft.errors import ConfigError


def check(spec: PortfolioSpec) -> None:
    """Rules that span tables, which one table's types and rules cannot say."""
    f = spec.file
    if not spec.models:
        raise ConfigError(f, "models", "no models declared", "add at least one [models.NAME] table")
    for name, model in spec.models.items():
        at = f"models.{name}"
        if not model.tiers:
            raise ConfigError(f, f"{at}.tiers", "the chain is empty", "add [[models.NAME.tiers]] tables")
        last = model.tiers[-1]
        if not isinstance(last, DefaultTierSpec):
            raise ConfigError(
                f,
                f"{at}.tiers[{len(model.tiers) - 1}]",
                "the last tier must be the safe default",
                'end the chain with a tier of kind = "default"',
            )
        seen: set[str] = set()
        for i, tier in enumerate(model.tiers):
            tat = f"{at}.tiers[{i}]"
            if tier.name in seen:
                raise ConfigError(
                    f, f"{tat}.name", f"duplicate tier name {tier.name!r}", "give each tier its own name"
                )
            seen.add(tier.name)
            if isinstance(tier, DefaultTierSpec):
                if i != len(model.tiers) - 1:
                    raise ConfigError(
                        f, tat, "a default tier must be the last of the chain", "move it to the end"
                    )
            else:
                _check_call_tier(spec, tier, tat)
        for i, cand in enumerate(model.candidates):
            cat = f"{at}.candidates[{i}]"
            if cand.name in seen:
                raise ConfigError(
                    f,
                    f"{cat}.name",
                    f"duplicate name {cand.name!r}",
                    "give each tier and candidate its own name (promotion swaps them by name)",
                )
            seen.add(cand.name)
            _check_call_tier(spec, cand, cat)
        names: set[str] = set()
        for i, feat in enumerate(model.inputs):
            fat = f"{at}.inputs[{i}]"
            if feat.name in names:
                raise ConfigError(
                    f, f"{fat}.name", f"duplicate feature {feat.name!r}", "name each feature once"
                )
            names.add(feat.name)
        # a rule about the monitor table, kept here: code builds MonitorSpecs whose reference comes from
        # elsewhere (a window's logic under test), which only a file must say
        mon = model.monitor
        if mon is not None and (mon.profile is None) == (mon.learn_rows == 0):
            raise ConfigError(
                f,
                f"{at}.monitor",
                "set exactly one of profile and learn_rows",
                'profile = "profiles/NAME.json" (from `failsoft profile`) or learn_rows = 5000',
            )


def _check_call_tier(spec: PortfolioSpec, tier: CandidateSpec, tat: str) -> None:
    if isinstance(tier, PythonTierSpec) and tier.path is not None:
        _check_model_path(spec, tier.path, f"{tat}.path")


_MODEL_SUFFIXES = (".onnx", ".joblib", ".pkl", ".pickle", ".txt", ".lgb")


def _check_model_path(spec: PortfolioSpec, path: str, key: str) -> None:
    p = spec.resolve(path)
    if not p.name.endswith(_MODEL_SUFFIXES):
        raise ConfigError(
            spec.file,
            key,
            f"unsupported model file {p.name!r}",
            "use .onnx, .joblib/.pkl (scikit-learn, LightGBM) or .txt/.lgb (LightGBM booster)",
        )
    if p.suffix == ".onnx":
        return
    # Unpickling runs code: only files under a folder the config trusts are loaded.
    trusted = [spec.resolve(d).resolve() for d in spec.trusted_model_dirs]
    real = p.resolve()
    if not any(real.is_relative_to(d) for d in trusted):
        raise ConfigError(
            spec.file,
            key,
            f"{path} is not under a trusted folder (loading it would run its code)",
            f'add its folder to trusted_model_dirs, e.g. trusted_model_dirs = ["{p.parent}"]',
        )
