"""XGBoost probabilities from the booster directly equal the scikit-learn wrapper's."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from xgboost import XGBClassifier

from storage.model_files import booster as booster_module
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


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("rows", [1, 20, 700])
def test_the_direct_c_call_gives_inplace_predicts_bits(early_stopping: bool, rows: int) -> None:
    """`predict_positive` calls XGBoost's C function itself (the one `inplace_predict`
    calls) with the same arguments: the same float32 values, missing values included."""
    X, y = _data(9)
    if early_stopping:
        model = XGBClassifier(n_estimators=200, max_depth=5, early_stopping_rounds=5)
        model.fit(X[:600], y[:600], eval_set=[(X[600:], y[600:])], verbose=False)
    else:
        model = XGBClassifier(n_estimators=60, max_depth=5, missing=-999.0).fit(X, y)
    predictor = BoosterPredictor.from_estimator(model)
    assert predictor is not None and predictor.direct_args is not None
    rng = np.random.default_rng(rows)
    batch = np.vstack([X, rng.normal(scale=3, size=(700, 8))])[rng.permutation(1500)[:rows]]
    batch[::4, 3] = np.nan
    batch[1::5, 1] = -999.0
    expected = predictor.booster.inplace_predict(
        batch,
        iteration_range=predictor.iteration_range,
        predict_type="value",
        missing=predictor.missing,
    )
    assert predictor.predict_positive(batch).tobytes() == np.asarray(expected).tobytes()
    # A strided, float32 view: converted as inplace_predict's input would be read.
    view = np.asfortranarray(batch.astype(np.float32))
    assert np.array_equal(predictor.predict_positive(view), predictor.predict_positive(batch))


def test_a_direct_call_that_disagrees_at_load_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another XGBoost whose C function wants other arguments: inplace_predict is kept."""
    X, y = _data(3, rows=300)
    model = XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    monkeypatch.setattr(booster_module, "_direct_args", lambda *_: b'{"type": 1}')
    predictor = BoosterPredictor.from_estimator(model)
    assert predictor is not None and predictor.direct_args is None
    assert np.array_equal(predictor.predict_positive(X), model.predict_proba(X)[:, 1])
