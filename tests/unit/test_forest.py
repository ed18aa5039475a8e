"""The vectorised RandomForest gives scikit-learn's probabilities, bit for bit."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from storage.model_files import forest as forest_module
from storage.model_files.forest import CompiledForest
from storage.model_files.store import load_model


@pytest.mark.parametrize(("depth", "seed"), [(3, 0), (8, 1), (None, 2)])
def test_compiled_forest_matches_scikit_learn(depth: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, 12))
    X[:, 3] = np.round(X[:, 3], 1)  # many ties: values land exactly on thresholds
    y = (X[:, 0] + X[:, 3] * X[:, 5] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=30, max_depth=depth, random_state=seed)
    forest.fit(X, y)
    compiled = CompiledForest.from_estimator(forest)
    assert compiled is not None
    probe = np.vstack([X[:200], rng.normal(scale=3, size=(200, 12)), X[:50] + 1e-9])
    assert np.abs(compiled.predict_proba(probe) - forest.predict_proba(probe)).max() < 1e-12


def test_loaded_forest_uses_the_compiled_path_and_falls_back_on_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 5))
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, X[:, 0] > 0)
    joblib.dump(forest, tmp_path / "rf.pkl")
    model = load_model(tmp_path / "rf.pkl")
    assert model.compiled is not None
    rows = rng.normal(size=(7, 5))
    assert np.abs(model.predict_proba(rows) - forest.predict_proba(rows)).max() < 1e-12
    rows[2, 1] = np.nan  # scikit-learn's own missing-value rules apply then
    assert np.allclose(model.predict_proba(rows), forest.predict_proba(rows), atol=1e-12)


def _copies_of_one_tree(trees: int, seed: int = 0) -> tuple[RandomForestClassifier, int]:
    """A real fitted forest whose estimators are `trees` references to one fitted tree:
    any number of trees x nodes without fitting or holding them."""
    X = np.random.default_rng(seed).normal(size=(300, 4))
    forest = RandomForestClassifier(n_estimators=1, max_depth=4, random_state=seed)
    forest.fit(X, X[:, 0] + X[:, 1] > 0)
    forest.estimators_ = forest.estimators_ * trees
    forest.n_estimators = trees
    return forest, int(forest.estimators_[0].tree_.node_count)


def test_a_forest_over_the_cell_limit_is_left_to_scikit_learn_without_allocating() -> None:
    """The guard runs before the padded arrays exist: a forest of trees x nodes above
    MAX_CELLS (here 20 M cells, ~1.5 GB once padded) costs no memory to refuse."""
    _, nodes = _copies_of_one_tree(1)
    forest, _ = _copies_of_one_tree(forest_module.MAX_CELLS // nodes + 1)
    tracemalloc.start()
    try:
        compiled = CompiledForest.from_estimator(forest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert compiled is None
    assert peak < 20_000_000


@pytest.mark.parametrize("over", [0, 1])
def test_the_cell_limit_is_inclusive(over: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly MAX_CELLS cells compile (and predict like scikit-learn); one cell more does not."""
    forest, nodes = _copies_of_one_tree(5)
    monkeypatch.setattr(forest_module, "MAX_CELLS", 5 * nodes - over)
    compiled = CompiledForest.from_estimator(forest)
    if over:
        assert compiled is None
        return
    assert compiled is not None
    probe = np.random.default_rng(1).normal(size=(50, 4))
    assert np.abs(compiled.predict_proba(probe) - forest.predict_proba(probe)).max() < 1e-12


def test_only_a_fitted_two_class_single_output_forest_is_compiled() -> None:
    """Anything else keeps scikit-learn's own predict_proba (whose shape differs)."""
    X = np.random.default_rng(2).normal(size=(120, 3))
    three = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, np.arange(120) % 3)
    two_outputs = RandomForestClassifier(n_estimators=3, random_state=0)
    two_outputs.fit(X, np.column_stack([X[:, 0] > 0, X[:, 1] > 0]))
    assert CompiledForest.from_estimator(RandomForestClassifier()) is None  # not fitted
    assert CompiledForest.from_estimator(three) is None
    assert CompiledForest.from_estimator(two_outputs) is None


@pytest.mark.parametrize(
    "rows", [1, forest_module.LARGE_BATCH - 1, forest_module.LARGE_BATCH, 5000]
)
def test_both_walks_give_scikit_learns_bits(rows: int) -> None:
    """Small batches take the level walk, large ones one `Tree.apply` per tree: either
    way the probabilities are scikit-learn's exactly (no tolerance), ties included."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(800, 9))
    X[:, 2] = np.round(X[:, 2], 1)
    y = (X[:, 0] - X[:, 2] * X[:, 4] + rng.normal(scale=0.5, size=800) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=25, max_depth=None, random_state=3).fit(X, y)
    forest.n_jobs = 1
    compiled = CompiledForest.from_estimator(forest)
    assert compiled is not None
    batch = np.vstack([X, rng.normal(scale=2, size=(5000, 9))])[:rows]
    assert np.array_equal(compiled.predict_proba(batch), forest.predict_proba(batch))


@pytest.mark.parametrize("rows", [1, 20, forest_module.LARGE_BATCH + 3])
def test_the_positive_column_alone_has_the_same_bits(rows: int) -> None:
    """Scoring asks only for p (`predict_positive`): exactly column 1 of the probabilities,
    on both walks."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, 6))
    X[:, 1] = np.round(X[:, 1], 1)
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=500) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=40, max_depth=9, random_state=5).fit(X, y)
    forest.n_jobs = 1
    compiled = CompiledForest.from_estimator(forest)
    assert compiled is not None
    batch = np.vstack([X, rng.normal(scale=2, size=(500, 6))])[:rows]
    positive = compiled.predict_positive(batch)
    assert positive.tobytes() == forest.predict_proba(batch)[:, 1].tobytes()


def test_a_threshold_rounded_down_to_float32_splits_every_float32_input_the_same_way() -> None:
    """The walk compares float32 inputs with float32 thresholds: for each float64
    threshold t, every float32 x near it (and at float32's ends) goes the same way as
    scikit-learn sends it (x <= t left)."""
    rng = np.random.default_rng(0)
    t = np.concatenate(
        [
            rng.normal(scale=10.0, size=2000),
            rng.normal(size=500).astype(np.float32).astype(np.float64),  # exactly float32
            [0.0, -0.0, 1e300, -1e300, 3.5e38, -3.5e38, 1e-46, -1e-46, -2.0],
        ]
    )
    limit = forest_module._floor32(t)
    with np.errstate(over="ignore"):  # t beyond float32: x near it is +-inf
        near = t.astype(np.float32)
    top, bottom = np.float32(np.inf), np.float32(-np.inf)
    f32 = np.finfo(np.float32)
    for x in (near, np.nextafter(near, top), np.nextafter(near, bottom)):
        assert np.array_equal(x > limit, x.astype(np.float64) > t)
    for x in (np.float32(f32.max), np.float32(-f32.max), top, bottom):
        assert np.array_equal(x > limit, np.float64(x) > t)
