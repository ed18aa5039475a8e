"""Malformed trees are refused before scikit-learn or XGBoost walk them.

Each file is a real trained model with one number changed (tests/hostile_models.py).
Without the checks, the index defects segfault the process in native code; here
every one is a `ModelFileError` that names the tree, the node and the defect,
and the models the Training Service really trains still load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hostile_models import tampered_booster, tampered_booster_json, tampered_forest
from model_factory import fit_estimator, train_model

from storage.model_files.store import ModelFileError, load_model

FEATURES = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("changes", "defect"),
    [
        ({"left_child": 10**9}, "tree 3 node 0: left child 1000000000 is out of range"),
        ({"right_child": -1}, "(a leaf has -1 on both sides)"),
        ({"node": 3, "right_child": -7}, "node 3: right child -7 is out of range"),
        (
            {"feature": 99},
            "tree 3 node 0: feature index 99 is out of range (the model has 3 features)",
        ),
        ({"feature": -3}, "feature index -3 is out of range"),
        ({"threshold": math.nan}, "node 0: threshold nan is not finite"),
        ({"node": 2, "right_child": 1}, "node 1 is the child of 2 nodes"),  # a shared subtree
        ({"n_node_samples": -1}, "negative or non-finite sample counts"),
        ({"values_shape": (None, 1, 3)}, "value array has shape"),
        ({"values_shape": (4, 1, 2)}, "value array has shape (4, 1, 2)"),
        ({"state": {"node_count": 10**6}}, "node_count is 1000000 but the node array holds"),
        ({"state": {"max_depth": 1}}, "max_depth is 1 but the tree is"),
    ],
)
def test_a_malformed_random_forest_is_refused_naming_the_defect(
    changes: dict[str, Any], defect: str, tmp_path: Path
) -> None:
    path = tmp_path / "rf.pkl"
    path.write_bytes(tampered_forest(FEATURES, tree=3, **changes))

    with pytest.raises(ModelFileError, match="malformed model") as refused:
        load_model(path)
    assert defect in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "defect"),
    [
        ({"left_children": 10**9}, "tree 2 node 0: left child 1000000000 is out of range"),
        ({"node": 1, "right_children": 0}, "tree 2 node 1: right child 0 is out of range"),
        ({"split_indices": 10**6}, "tree 2 node 0: split index 1000000 is out of range"),
        ({"split_indices": 3}, "split index 3 is out of range (the model has 3 features)"),
        ({"split_conditions": math.nan}, "tree 2 node 0: split value nan is not finite"),
        ({"split_conditions": math.inf}, "split value inf is not finite"),
    ],
)
def test_a_malformed_xgboost_booster_is_refused_naming_the_defect(
    changes: dict[str, Any], defect: str, tmp_path: Path
) -> None:
    pickled = tmp_path / "xgb.pkl"
    pickled.write_bytes(tampered_booster(FEATURES, tree=2, **changes))
    native = tmp_path / "xgb.json"
    native.write_bytes(tampered_booster_json(FEATURES, tree=2, **changes))

    with pytest.raises(ModelFileError, match="malformed model") as refused:
        load_model(pickled)
    assert defect in str(refused.value)
    with pytest.raises(ModelFileError, match="XGBoost model file") as refused:
        load_model(native)
    assert defect in str(refused.value)


def test_a_booster_holding_fewer_trees_than_it_declares_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "xgb.json"
    path.write_bytes(tampered_booster_json(FEATURES, model={"num_trees": "500"}))

    with pytest.raises(ModelFileError, match="declares 500 trees but holds 10"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_native_xgboost_files_pass_the_checks(suffix: str, tmp_path: Path) -> None:
    estimator, _ = fit_estimator("xgboost", FEATURES)
    estimator.save_model(tmp_path / f"xgb{suffix}")

    assert load_model(tmp_path / f"xgb{suffix}").kind == "xgboost"


def test_trained_models_of_every_kind_pass_the_checks(tmp_path: Path) -> None:
    for kind in ("random_forest", "xgboost"):
        path = train_model(kind, FEATURES, n_estimators=5, path=tmp_path / f"{kind}.pkl")
        assert load_model(path).kind == kind
