"""Scoring a batch, and the columns one batch insert sends for several models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.runtime.messages import Tick
from actors.scoring.batch_writer import ModelScores, batch_rows, fresh_items, tick_texts
from actors.scoring.model_runtime import (
    INVALID_PROBABILITY,
    ModelRuntime,
    Scored,
    build_runtime,
    prediction_of,
    score,
)
from actors.webhooks.payload import ReportedPrediction, tag_for, webhook_items
from features import matrix as features_matrix
from features.matrix import HUGE_FEATURE, NO_ROW, NULL_FEATURE, TickRows
from storage.model_files.store import LoadedModel

AT = datetime(2026, 5, 1, 12, tzinfo=UTC)
FEATURES = ["price_close", "volume_sol"]


class _Misbehaving:
    """An estimator whose probabilities are not probabilities (a broken model file)."""

    def __init__(self, positive: list[float]) -> None:
        self.positive = np.array(positive)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert X.shape[0] == len(self.positive)
        return np.column_stack([1 - self.positive, self.positive])


def _runtime(estimator: Any, active_model_id: int = 1, **row: Any) -> ModelRuntime:
    features = row.get("features", FEATURES)
    loaded = LoadedModel(
        estimator=estimator,
        kind="xgboost",
        feature_names_in=features,
        n_features_in=len(features),
        sha256="0" * 64,
        path=Path("m.pkl"),
        file_format="joblib",
    )
    columns: dict[str, Any] = {
        "id": active_model_id,
        "model_id": 40 + active_model_id,
        "name": "m",
        "custom_name": None,
        "model_type": "xgboost",
        "features": features,
        "params": {},
        "phases": None,
        "alert_threshold": 0.7,
        "target_kind": "time_based",
        "target_variable": "price_close",
        "target_operator": None,
        "target_value": None,
        "future_minutes": 5,
        "price_change_percent": 10.0,
        "target_direction": "up",
        "n8n_webhook_url": None,
        "n8n_enabled": True,
        "n8n_send_modes": ["all"],
    }
    return build_runtime({**columns, **row}, loaded)


def _ticks(n: int) -> list[Tick]:
    return [Tick(i + 1, f"coin{i}", AT + timedelta(seconds=i), 2, 0.0) for i in range(n)]


def _rows(ticks: list[Tick]) -> TickRows:
    values = np.array([[1e-7 * (i + 1), 5.0, 100.0 * (i + 1)] for i in range(len(ticks))])
    columns = {"price_close": 0, "volume_sol": 1, "market_cap_close": 2}
    return TickRows(
        values, columns, {(t.coin_id, t.data_timestamp): i for i, t in enumerate(ticks)}
    )


def test_a_probability_outside_0_1_skips_its_tick_with_a_reason_and_keeps_the_others() -> None:
    ticks = _ticks(4)
    runtime = _runtime(_Misbehaving([0.9, float("nan"), 1.5, 0.2]))
    scored = score(runtime, ticks, _rows(ticks))
    assert [t.coin_id for t in scored.ticks] == ["coin0", "coin3"]
    assert scored.probabilities.tolist() == [0.9, 0.2]
    # The snapshot columns follow the kept ticks, not the matrix rows.
    assert scored.snapshots == [(1e-7, 100.0), (4e-7, 400.0)]
    assert scored.skipped == [(ticks[1], INVALID_PROBABILITY), (ticks[2], INVALID_PROBABILITY)]


def test_batch_rows_send_each_tick_and_each_model_once() -> None:
    ticks = _ticks(3)
    rows = _rows(ticks)
    first = _runtime(_Misbehaving([0.95, 0.6, 0.1]), active_model_id=1)
    classic = _runtime(
        _Misbehaving([0.75, 0.4]),
        active_model_id=2,
        alert_threshold=0.8,
        target_kind="classic",
        target_operator=">",
        target_value=5.0,
        future_minutes=None,
    )
    scores = [
        ModelScores(first, score(first, ticks, rows)),
        ModelScores(classic, score(classic, [ticks[2], ticks[0]], rows)),
    ]
    batch = batch_rows(scores)
    assert batch.coin_ids == ["coin0", "coin1", "coin2"]
    assert batch.data_timestamps == [t.data_timestamp for t in ticks]
    assert batch.price_closes == [1e-7, 2e-7, 3e-7]
    assert batch.market_caps == [100.0, 200.0, 300.0]
    assert batch.model_index == [0, 0, 0, 1, 1]
    assert batch.tick_index == [0, 1, 2, 2, 0]
    assert batch.probabilities == [0.95, 0.6, 0.1, 0.75, 0.4]
    assert batch.predictions == [1, 1, 0, 1, 0]
    # Tags by each model's own threshold (0.7 and 0.8).
    assert batch.tags == ["alert", "positive", "negative", "positive", "negative"]
    assert [m.active_model_id for m in batch.models] == [1, 2]
    assert [m.evaluation_delay for m in batch.models] == [timedelta(minutes=5), timedelta(0)]


class _Echo:
    """A model whose probability is a fixed function of its row: what it was fed shows."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        positive = 1.0 / (1.0 + np.exp(-X.sum(axis=1)))
        return np.column_stack([1 - positive, positive])


@pytest.mark.parametrize("coins", [6, features_matrix.SHARED_BLOCK_ROWS + 1])
@pytest.mark.parametrize("trouble", ["none", "other_model_null", "own_null", "huge", "no_row"])
def test_models_sharing_a_batchs_rows_get_what_each_would_get_alone(
    coins: int, trouble: str
) -> None:
    """The models of a batch share its rows' lookup and checks (`TickRows.found`): every
    model must still get exactly its own rows, probabilities, snapshots and skips, also
    when a NULL sits in a column only another model reads."""
    ticks = _ticks(coins)
    names = ["price_close", "market_cap_close", "volume_sol", "num_buys", "unique_wallets"]
    values = np.random.default_rng(3).normal(size=(coins, len(names)))
    index = {(t.coin_id, t.data_timestamp): i for i, t in enumerate(ticks)}
    if trouble == "other_model_null":
        values[2, names.index("unique_wallets")] = np.nan
    elif trouble == "own_null":
        values[2, names.index("volume_sol")] = np.nan
    elif trouble == "huge":
        values[1, names.index("num_buys")] = 1e300
    elif trouble == "no_row":
        del index[(ticks[3].coin_id, ticks[3].data_timestamp)]
    rows = TickRows(values, {n: i for i, n in enumerate(names)}, index)
    first = _runtime(_Echo(), 1, features=["price_close", "volume_sol"])
    second = _runtime(_Echo(), 2, features=["num_buys", "volume_sol", "price_close"])
    third = _runtime(_Echo(), 3, features=["unique_wallets"])
    models = (first, second, third)
    keys = [(t.coin_id, t.data_timestamp) for t in ticks]
    # Each model alone: its own lookup and checks (the path before sharing, still the
    # path of `matrix` without `shared`).
    alone = [TickRows(values, rows.columns, index).matrix(keys, r.spec) for r in models]
    together = [score(r, ticks, rows) for r in models]
    shared = rows.found(ticks, lambda: pytest.fail("the lookup was not shared"))
    for runtime, own in zip(models, alone, strict=True):
        matrix = rows.matrix((), runtime.spec, shared=shared)
        assert matrix.values.tobytes() == own.values.tobytes()
        assert matrix.values.shape == own.values.shape
        assert (matrix.rows, matrix.skipped) == (own.rows, own.skipped)
        assert matrix.positions.tolist() == own.positions.tolist()
    for scored, own in zip(together, alone, strict=True):
        assert [t.coin_id for t in scored.ticks] == [ticks[i].coin_id for i in own.rows]
        assert scored.skipped == [(ticks[i], reason) for i, reason in own.skipped]
        closes = values[own.positions, 0].tolist()
        assert [close for close, _ in scored.snapshots] == closes
    reasons = [[reason for _, reason in s.skipped] for s in together]
    null, huge, none = NULL_FEATURE, HUGE_FEATURE, NO_ROW
    assert (
        reasons
        == {
            "none": [[], [], []],
            "other_model_null": [[], [], [null]],
            "own_null": [[null], [null], []],
            "huge": [[], [huge], []],
            "no_row": [[none], [none], [none]],
        }[trouble]
    )


def test_a_batchs_webhook_items_come_from_its_stored_columns_as_from_reported_rows() -> None:
    """`write_batch` builds each model's items from the batch's columns: the items of
    the rows as they were reported one by one (a range of positions or some of them)."""
    ticks = _ticks(4)
    rows = _rows(ticks)
    first = _runtime(_Misbehaving([0.95, 0.6, 0.1, 0.5]), active_model_id=1)
    second = _runtime(_Misbehaving([0.75, 0.4]), active_model_id=2, alert_threshold=0.5)
    scores = [
        ModelScores(first, score(first, ticks, rows)),
        ModelScores(second, score(second, [ticks[3], ticks[1]], rows)),
    ]
    batch = batch_rows(scores)
    texts = tick_texts(batch)
    url = "http://127.0.0.1:9/hook"
    for runtime, positions in ((first, range(0, 4)), (second, range(4, 6)), (first, [0, 2])):
        reported = [
            ReportedPrediction(
                batch.coin_ids[batch.tick_index[k]],
                batch.data_timestamps[batch.tick_index[k]],
                batch.predictions[k],
                batch.probabilities[k],
                batch.tags[k],
                runtime.webhook.alert_threshold,
            )
            for k in positions
        ]
        expected = webhook_items(runtime.webhook, reported, default_url=url)
        assert fresh_items(batch, texts, runtime.webhook, positions, default_url=url) == expected
        assert len(expected) == len(positions)


@given(
    probabilities=st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.5, 0.7, 0.4999999999999999, 1.0])),
        max_size=30,
    ),
    threshold=st.sampled_from([0.7, 0.5, 0.3, 1.0, 0.7000000000000001]),
)
def test_tags_and_predictions_of_a_whole_batch_follow_tag_for_and_prediction_of(
    probabilities: list[float], threshold: float
) -> None:
    """The batch's tags and predictions are computed on the array at once: each equals
    `tag_for` / `prediction_of` of its probability (alert first, boundaries included)."""
    scored = Scored([], np.array(probabilities, dtype=np.float64), [], [])
    floats, tags = scored.tagged(threshold)
    assert floats == probabilities
    assert tags == [tag_for(p, threshold) for p in probabilities]
    assert scored.predictions() == [prediction_of(p) for p in probabilities]
    assert all(type(v) is int for v in scored.predictions())
