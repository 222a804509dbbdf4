"""Tree ensembles as numpy arithmetic: scikit-learn forests and gradient boosting (histogram boosting
included) and LightGBM boosters, flattened into arrays walked level by level (``failsoft.tiers.compile``
proves each against the original model before it is used)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Compiled = Callable[[Array], Array]


def sigmoid(z: Array) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-z))
    return out


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def binary(p: Array) -> Array:
    out = np.empty((p.shape[0], 2))
    out[:, 1] = p
    out[:, 0] = 1.0 - p
    return out


# ---- tree ensembles -------------------------------------------------------------------------------------


class _Forest:
    """All trees of an ensemble flattened into node arrays; leaves point at themselves."""

    def __init__(self) -> None:
        self.feature: list[Array] = []
        self.threshold: list[Array] = []
        self.left: list[Array] = []
        self.right: list[Array] = []
        self.miss_left: list[Array] = []
        self.value: list[Array] = []
        self.roots: list[int] = []
        self.depth = 0
        self.size = 0

    def add(
        self,
        feature: Array,
        threshold: Array,
        left: Array,
        right: Array,
        miss_left: Array,
        value: Array,
        depth: int,
    ) -> None:
        n = len(feature)
        idx = np.arange(n)
        leaf = left < 0
        self.feature.append(np.where(leaf, 0, feature).astype(np.intp))
        self.threshold.append(np.where(leaf, np.inf, threshold).astype(np.float64))
        self.left.append(np.where(leaf, idx, left) + self.size)
        self.right.append(np.where(leaf, idx, right) + self.size)
        self.miss_left.append(miss_left.astype(bool))
        self.value.append(value.astype(np.float64))
        self.roots.append(self.size)
        self.depth = max(self.depth, depth)
        self.size += n

    def build(self, float32_inputs: bool) -> Callable[[Array], Array]:
        """A function from X (n, F) to leaf values (n, T, k)."""
        feature = np.concatenate(self.feature)
        threshold = np.concatenate(self.threshold)
        left, right = np.concatenate(self.left), np.concatenate(self.right)
        miss = np.concatenate(self.miss_left)
        value = np.concatenate(self.value)
        roots = np.asarray(self.roots, dtype=np.intp)
        depth = self.depth

        def leaves(x: Array) -> Array:
            if float32_inputs:  # scikit-learn trees compare float32 copies of the inputs
                x = x.astype(np.float32).astype(np.float64)
            n = x.shape[0]
            nodes = np.broadcast_to(roots, (n, len(roots))).copy()
            rows = np.arange(n)[:, None]
            for _ in range(depth):
                v = x[rows, feature[nodes]]
                go_left = (v <= threshold[nodes]) | (np.isnan(v) & miss[nodes])
                nodes = np.where(go_left, left[nodes], right[nodes])
            out: Array = value[nodes]
            return out

        return leaves


def _sk_tree(forest: _Forest, tree: Any, normalize: bool) -> None:
    t = tree.tree_
    value = t.value[:, 0, :]
    if normalize:
        total = value.sum(axis=1, keepdims=True)
        value = np.divide(value, total, out=np.zeros_like(value), where=total > 0)
    miss = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=bool))
    forest.add(t.feature, t.threshold, t.children_left, t.children_right, miss, value, t.max_depth)


def sklearn_trees(model: Any, method: str) -> Compiled | None:
    name = type(model).__name__
    classifier = hasattr(model, "classes_")
    forest = _Forest()
    if name in {"DecisionTreeClassifier", "DecisionTreeRegressor"}:
        trees = [model]
    elif name in {
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
    }:
        trees = list(model.estimators_)
    elif name in {"GradientBoostingClassifier", "GradientBoostingRegressor"}:
        return _gradient_boosting(model, method)
    elif name in {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}:
        return _hist_gradient_boosting(model, method)
    else:
        return None
    if getattr(model, "n_outputs_", 1) != 1:
        return None
    for tree in trees:
        _sk_tree(forest, tree, normalize=classifier)
    leaves = forest.build(float32_inputs=True)
    if classifier:

        def proba(x: Array) -> Array:
            out: Array = leaves(x).mean(axis=1)
            return out

        return _by_proba(proba, model.classes_, method)
    if method == "predict":
        return lambda x: leaves(x).mean(axis=1)[:, 0]
    return None


def _by_proba(proba: Compiled, classes: Array, method: str) -> Compiled | None:
    """A classifier's method from its class probabilities: them, or the most probable class."""
    if method == "predict_proba":
        return proba
    if method == "predict":
        return lambda x: classes[np.argmax(proba(x), axis=1)]
    return None


def _gradient_boosting(model: Any, method: str) -> Compiled | None:
    if model.estimators_.shape[1] != 1:  # multi-class boosting: not compiled
        return None
    init = getattr(model, "init_", None)
    if (
        init is not None
        and init != "zero"
        and type(init).__name__ != "DummyClassifier"
        and type(init).__name__ != "DummyRegressor"
    ):
        return None
    forest = _Forest()
    for tree in model.estimators_[:, 0]:
        _sk_tree(forest, tree, normalize=False)
    leaves = forest.build(float32_inputs=True)
    base = float(np.ravel(model._raw_predict_init(np.zeros((1, model.n_features_in_))))[0])
    lr = float(model.learning_rate)

    def raw(x: Array) -> Array:
        out: Array = base + lr * leaves(x)[:, :, 0].sum(axis=1)
        return out

    if hasattr(model, "classes_"):
        classes = model.classes_
        if method == "predict_proba":
            return lambda x: binary(sigmoid(raw(x)))
        if method == "predict":
            return lambda x: classes[(raw(x) > 0).astype(int)]
        return None
    return raw if method == "predict" else None


def _hist_gradient_boosting(model: Any, method: str) -> Compiled | None:
    """scikit-learn's histogram boosting on numeric features (categorical splits are not compiled). Its
    trees compare the float64 inputs with real-valued thresholds, leaf values carry the learning rate, and
    the model's own loss maps the summed raw score to probabilities or predictions."""
    if getattr(model, "_preprocessor", None) is not None or np.any(getattr(model, "is_categorical_", None)):
        return None
    k = len(model._predictors[0])  # trees per iteration: one per class for multi-class, else one
    forest = _Forest()
    for iteration in model._predictors:
        for j, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                return None
            leaf = nodes["is_leaf"].astype(bool)
            value = np.zeros((len(nodes), k))
            value[:, j] = nodes["value"]  # a tree adds to its own class's raw score
            left = np.where(leaf, -1, nodes["left"].astype(np.intp))
            right = np.where(leaf, -1, nodes["right"].astype(np.intp))
            depth = int(nodes["depth"].max())
            forest.add(
                nodes["feature_idx"],
                nodes["num_threshold"],
                left,
                right,
                nodes["missing_go_to_left"],
                value,
                depth,
            )
    leaves = forest.build(float32_inputs=False)
    base = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, k)
    loss = model._loss

    def raw(x: Array) -> Array:
        out: Array = base + leaves(x).sum(axis=1)
        return out

    if hasattr(model, "classes_"):

        def proba(x: Array) -> Array:
            r = raw(x)
            out: Array = loss.predict_proba(r[:, 0] if k == 1 else r)
            return out

        return _by_proba(proba, model.classes_, method)
    if method == "predict":
        return lambda x: loss.link.inverse(raw(x).ravel())
    return None


def _lgb_nodes(root: dict[str, Any]) -> tuple[list[dict[str, Any]], int] | None:
    """A LightGBM tree (from ``dump_model``) as a node list in preorder with child indices, and its depth."""
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], depth: int) -> tuple[int, int]:
        i = len(nodes)
        nodes.append(node)
        if "leaf_value" in node or "split_feature" not in node:
            node["_l"] = node["_r"] = -1
            return i, depth
        if node.get("decision_type") != "<=" or node.get("missing_type") not in {"None", "NaN"}:
            raise ValueError("unsupported split")
        node["_l"], dl = walk(node["left_child"], depth + 1)
        node["_r"], dr = walk(node["right_child"], depth + 1)
        return i, max(dl, dr)

    try:
        _, depth = walk(root, 0)
    except ValueError:  # categorical or zero-as-missing splits: not compiled
        return None
    return nodes, depth


def lightgbm_booster(model: Any, method: str) -> Compiled | None:
    booster = model.booster_ if hasattr(model, "booster_") else model
    if type(booster).__name__ != "Booster":
        return None
    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    if dump.get("num_class", 1) != 1:
        return None
    forest = _Forest()
    for info in dump["tree_info"]:
        flat = _lgb_nodes(info["tree_structure"])
        if flat is None:
            return None
        nodes, depth = flat
        forest.add(
            np.array([n.get("split_feature", 0) for n in nodes]),
            np.array([n.get("threshold", 0.0) for n in nodes], dtype=np.float64),
            np.array([n["_l"] for n in nodes]),
            np.array([n["_r"] for n in nodes]),
            np.array([bool(n.get("default_left", False)) and n.get("missing_type") == "NaN" for n in nodes]),
            np.array([[n.get("leaf_value", 0.0)] for n in nodes], dtype=np.float64),
            depth,
        )
    leaves = forest.build(float32_inputs=False)

    def raw(x: Array) -> Array:
        out: Array = leaves(x)[:, :, 0].sum(axis=1)
        return out

    if objective.startswith("binary"):
        k = float(objective.split("sigmoid:")[1].split()[0]) if "sigmoid:" in objective else 1.0
        if hasattr(model, "booster_"):  # the scikit-learn wrapper
            classes = model.classes_
            if method == "predict_proba":
                return lambda x: binary(sigmoid(k * raw(x)))
            if method == "predict":
                return lambda x: classes[(raw(x) > 0).astype(int)]
            return None
        return (lambda x: sigmoid(k * raw(x))) if method == "predict" else None
    if objective.startswith("regression") and method == "predict":
        return raw
    return None
