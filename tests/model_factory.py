"""Real, small models for tests, made the way the Training Service makes them.

The Training Service fits a bare `RandomForestClassifier` or `XGBClassifier`
on a pandas frame (so the model carries `feature_names_in_`) and saves it with
`joblib.dump`. These helpers do the same on generated data, fast (10 trees,
400 rows by default), deterministic for a given seed.

    path = train_model("xgboost", ["price_close", "volume_sol"], path=tmp_path / "m.pkl")
    data = train_model("random_forest", names)             # the file's bytes
    estimator, frame = fit_estimator("random_forest", names)  # to compare predictions
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from xgboost import XGBClassifier

ModelKind = Literal["xgboost", "random_forest"]


def make_training_frame(
    feature_names: Sequence[str], *, seed: int = 0, n_rows: int = 400
) -> tuple[pd.DataFrame, np.ndarray]:
    """Features (one column per name) and 0/1 labels that depend on them, both classes present."""
    if not feature_names:
        raise ValueError("a model needs at least one feature")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, len(feature_names)))
    weights = rng.normal(size=len(feature_names))
    score = X @ weights + rng.normal(scale=0.5, size=n_rows)
    y = (score > np.median(score)).astype(np.int64)
    return pd.DataFrame(X, columns=list(feature_names)), y


def fit_estimator(
    kind: ModelKind,
    feature_names: Sequence[str],
    *,
    seed: int = 0,
    n_rows: int = 400,
    n_estimators: int = 10,
) -> tuple[Any, pd.DataFrame]:
    """A fitted classifier and the frame it was trained on (reuse its rows to predict)."""
    frame, y = make_training_frame(feature_names, seed=seed, n_rows=n_rows)
    estimator: Any
    if kind == "random_forest":
        estimator = RandomForestClassifier(
            n_estimators=n_estimators, max_depth=6, random_state=seed
        )
    elif kind == "xgboost":
        estimator = XGBClassifier(
            n_estimators=n_estimators, max_depth=3, random_state=seed, n_jobs=1
        )
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    estimator.fit(frame, y)
    return estimator, frame


@overload
def train_model(
    kind: ModelKind,
    feature_names: Sequence[str],
    *,
    seed: int = ...,
    n_rows: int = ...,
    n_estimators: int = ...,
    path: None = ...,
) -> bytes: ...
@overload
def train_model(
    kind: ModelKind,
    feature_names: Sequence[str],
    *,
    seed: int = ...,
    n_rows: int = ...,
    n_estimators: int = ...,
    path: str | Path,
) -> Path: ...
def train_model(
    kind: ModelKind,
    feature_names: Sequence[str],
    *,
    seed: int = 0,
    n_rows: int = 400,
    n_estimators: int = 10,
    path: str | Path | None = None,
) -> Path | bytes:
    """Train a model and save it as a joblib pickle: to `path` (returned), else as bytes."""
    estimator, _ = fit_estimator(
        kind, feature_names, seed=seed, n_rows=n_rows, n_estimators=n_estimators
    )
    if path is None:
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        return buffer.getvalue()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, target)
    return target
