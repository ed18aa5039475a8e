"""XGBoost probabilities from the booster directly equal the scikit-learn wrapper's."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from xgboost import XGBClassifier

from storage.model_files.booster import BoosterPredictor
from storage.model_files.store import load_model


def _data(seed: int, rows: int = 800) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 8))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.8, size=rows) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_loaded_xgboost_model_predicts_through_its_booster_with_the_wrappers_results(
    tmp_path: Path, early_stopping: bool
) -> None:
    X, y = _data(5)
    if early_stopping:
        # The wrapper then predicts with the trees up to the best iteration only.
        model = XGBClassifier(n_estimators=300, max_depth=4, early_stopping_rounds=5)
        model.fit(X[:600], y[:600], eval_set=[(X[600:], y[600:])], verbose=False)
        assert model.best_iteration + 1 < 300
    else:
        model = XGBClassifier(n_estimators=50, max_depth=4).fit(X, y)
    joblib.dump(model, tmp_path / "xgb.pkl")
    loaded = load_model(tmp_path / "xgb.pkl")
    assert isinstance(loaded.compiled, BoosterPredictor)
    rows = np.vstack([X[:100], np.random.default_rng(6).normal(scale=3, size=(100, 8))])
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    # What scoring reads: p alone, the same bits as the wrapper's column 1.
    positive = loaded.predict_positive(rows)
    assert positive.tobytes() == model.predict_proba(rows)[:, 1].astype(np.float64).tobytes()
    rows[3, 2] = np.nan  # missing values: the wrapper predicts, as before
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    assert np.array_equal(loaded.predict_positive(rows), model.predict_proba(rows)[:, 1])


def test_other_objectives_keep_the_wrapper() -> None:
    X, y = _data(7, rows=300)
    raw = XGBClassifier(n_estimators=5, objective="binary:logitraw").fit(X, y)
    assert BoosterPredictor.from_estimator(raw) is None
    linear = XGBClassifier(n_estimators=5, booster="gblinear").fit(X, y)
    assert BoosterPredictor.from_estimator(linear) is None
