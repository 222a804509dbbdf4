"""portfolio.toml -> a typed, validated, immutable spec.

Every error names the file, the key and the fix, e.g.
``portfolio.toml: models.recs.tiers[1].timeout_ms: Expected `int` >= 1, got -5 (use a positive number of
milliseconds)``. Relative paths in the file are resolved against the file's own folder.

The rooms: ``spec`` (the Structs, and each table's own rules), ``messages`` (msgspec's errors in a
person's words), ``rules`` (what spans tables), ``load`` (TOML and the environment).
"""

from failsoft.config.load import load, parse
from failsoft.config.messages import suggest
from failsoft.config.process import ServerSpec, ShadowSpec, StoreSpec, StreamSpec
from failsoft.config.spec import (
    METRICS,
    TIER_KINDS,
    AuditSpec,
    BreakerSpec,
    CandidateSpec,
    DefaultTierSpec,
    DriftSpec,
    FeatureSpec,
    FeaturesSpec,
    FeatureUseSpec,
    HttpTierSpec,
    ModelSpec,
    MonitorSpec,
    OipTierSpec,
    OutputSpec,
    PortfolioSpec,
    PromotionSpec,
    PythonTierSpec,
    SageMakerTierSpec,
    TierSpec,
)

__all__ = [
    "METRICS",
    "TIER_KINDS",
    "AuditSpec",
    "BreakerSpec",
    "CandidateSpec",
    "DefaultTierSpec",
    "DriftSpec",
    "FeatureSpec",
    "FeatureUseSpec",
    "FeaturesSpec",
    "HttpTierSpec",
    "ModelSpec",
    "MonitorSpec",
    "OipTierSpec",
    "OutputSpec",
    "PortfolioSpec",
    "PromotionSpec",
    "PythonTierSpec",
    "SageMakerTierSpec",
    "ServerSpec",
    "ShadowSpec",
    "StoreSpec",
    "StreamSpec",
    "TierSpec",
    "load",
    "parse",
    "suggest",
]
