"""The point-in-time feature store: values with when they happened and when they became available."""

from failsoft.features.point_in_time import build_training_set
from failsoft.features.store import FeatureStore, FeatureTable

__all__ = ["FeatureStore", "FeatureTable", "build_training_set"]
