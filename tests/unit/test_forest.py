"""The vectorised RandomForest gives scikit-learn's probabilities, bit for bit."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from storage.forest import CompiledForest
from storage.model_files import load_model


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
