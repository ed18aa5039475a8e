"""Malicious model files, crafted from real trained models (tests/model_factory.py).

An attacker who controls the Training Service's files keeps every class on
the unpickler's allow-list and only changes numbers: a child index, a feature
index, an array shape. These helpers do exactly that, so the files are what
scikit-learn or XGBoost would walk off the end of their arrays with.

    data = tampered_forest(FEATURES, node=0, left_child=10**9)
    data = tampered_forest(FEATURES, values_shape=(None, 1, 3))
    data = tampered_booster(FEATURES, tree=0, node=0, split_indices=10**6)
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import joblib
import numpy as np
import xgboost
from model_factory import fit_estimator
from sklearn.tree._tree import Tree

__all__ = ["tampered_booster", "tampered_booster_json", "tampered_forest"]


class _PickledTree:
    """Pickles as a scikit-learn `Tree` with any state, as a hand-edited file would."""

    def __init__(self, args: tuple[Any, ...], state: dict[str, Any]) -> None:
        self.args = args
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        return (Tree, self.args, self.state)


def tampered_forest(
    features: Sequence[str],
    *,
    tree: int = 0,
    node: int = 0,
    state: dict[str, Any] | None = None,
    values_shape: tuple[int | None, int, int] | None = None,
    **node_fields: Any,
) -> bytes:
    """A trained RandomForest's joblib bytes with one tree changed.

    `node_fields` set fields of one node (left_child, feature, threshold ...);
    `state` replaces entries of the tree's pickled state (node_count,
    max_depth); `values_shape` reshapes its value array (None: keep the length).
    """
    forest, _ = fit_estimator("random_forest", features)
    target = forest.estimators_[tree].tree_
    pickled = dict(target.__getstate__())
    nodes = pickled["nodes"].copy()
    for name, value in node_fields.items():
        nodes[name][node] = value
    pickled["nodes"] = nodes
    if values_shape is not None:
        length = values_shape[0] if values_shape[0] is not None else len(nodes)
        pickled["values"] = np.full((length, *values_shape[1:]), 0.5)
    pickled.update(state or {})
    args = (target.n_features, np.asarray(target.n_classes), target.n_outputs)
    forest.estimators_[tree].tree_ = _PickledTree(args, pickled)
    buffer = io.BytesIO()
    joblib.dump(forest, buffer)
    return buffer.getvalue()


def _booster_document(features: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    estimator, _ = fit_estimator("xgboost", features)
    return estimator, json.loads(bytes(estimator.get_booster().save_raw("json")))


def _tamper(
    doc: dict[str, Any], tree: int, node: int, model: dict[str, Any], fields: dict[str, Any]
) -> None:
    gbtree = doc["learner"]["gradient_booster"]["model"]
    for key, value in fields.items():
        gbtree["trees"][tree][key][node] = value
    gbtree["gbtree_model_param"].update(model)


def tampered_booster(
    features: Sequence[str],
    *,
    tree: int = 0,
    node: int = 0,
    model: dict[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """A trained XGBClassifier's joblib bytes with one tree node's arrays changed.

    `fields` set one entry of a tree array (left_children, split_indices,
    split_conditions ...); `model` changes gbtree_model_param (num_trees).
    XGBoost itself loads such a model without complaint when only indices or
    values change; its predictor then reads outside its arrays.
    """
    estimator, doc = _booster_document(features)
    _tamper(doc, tree, node, model or {}, fields)
    booster = xgboost.Booster()
    # float("nan") is written as NaN, which XGBoost's JSON reader accepts.
    booster.load_model(bytearray(json.dumps(doc).encode()))
    estimator._Booster = booster
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def tampered_booster_json(
    features: Sequence[str],
    *,
    tree: int = 0,
    node: int = 0,
    model: dict[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """The same as a native XGBoost JSON model file (what `Booster.save_model` writes)."""
    _, doc = _booster_document(features)
    _tamper(doc, tree, node, model or {}, fields)
    return json.dumps(doc).encode()
