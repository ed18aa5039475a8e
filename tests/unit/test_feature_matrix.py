"""From a model's feature list to the matrix it is fed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features import FeatureSpec, UnknownFeatureError, build_matrix, compute
from features.columns import NUMERIC_BASE_COLUMNS

START = datetime(2026, 1, 1, tzinfo=UTC)


def _history() -> pl.DataFrame:
    rows = []
    for mint, price in (("A", 1.0), ("B", 2.0)):
        for i in range(20):
            rows.append(
                {
                    "mint": mint,
                    "timestamp": START + timedelta(seconds=10 * i),
                    "price_close": price + i,
                    "price_high": price + i + 0.5,
                    "volume_sol": 1.0 + i,
                    "num_buys": i,
                    "buy_pressure_ratio": 0.5,
                    "dev_sold_amount": 0.0,
                }
            )
    frame = pl.DataFrame(rows)
    filler = [c for c in NUMERIC_BASE_COLUMNS if c not in frame.columns and c != "id"]
    return frame.with_columns([pl.lit(1.0).alias(c) for c in filler])


def test_unknown_features_are_refused_all_by_name() -> None:
    with pytest.raises(UnknownFeatureError) as err:
        FeatureSpec.from_model(["price_close", "moon_factor", "price_roc_x", "volume_ratio_10"])
    assert err.value.names == ["moon_factor", "price_roc_x"]
    assert "moon_factor" in str(err.value) and "price_roc_x" in str(err.value)


def test_spec_derives_windows_base_columns_and_history_from_names() -> None:
    spec = FeatureSpec.from_model(
        [
            "volume_sol",
            "price_roc_5",
            "volume_spike_20",
            "ath_distance_pct",
            "price_roc_5_has_data",
        ],
        {"use_engineered_features": True, "feature_engineering_windows": [5, 10, 15]},
    )
    assert spec.windows == (5, 20)
    assert spec.base_columns == ("volume_sol",)
    assert spec.has_data_flags == ("price_roc_5_has_data",)
    assert spec.history_rows == 41
    assert spec.needs_engineering


def test_matrix_columns_follow_the_models_order_and_rows_the_ticks() -> None:
    history = _history()
    spec = FeatureSpec.from_model(["price_roc_5", "num_buys", "price_close"])
    ticks = pl.DataFrame(
        {
            "mint": ["B", "A"],
            "timestamp": [START + timedelta(seconds=190), START + timedelta(seconds=100)],
        }
    )
    matrix = build_matrix(spec.compute(history), ticks, spec)
    assert matrix.rows == [0, 1]
    assert matrix.skipped == []
    # B at its 20th row: close 21, five rows earlier 16.
    assert matrix.values[0].tolist() == pytest.approx([(21 - 16) / 16 * 100, 19, 21])
    assert matrix.values[1].tolist() == pytest.approx([(11 - 6) / 6 * 100, 10, 11])


def test_tick_without_a_row_at_its_timestamp_is_skipped_with_a_reason() -> None:
    spec = FeatureSpec.from_model(["price_close", "volume_ratio_5"])
    ticks = pl.DataFrame(
        {
            "mint": ["A", "ZZZ"],
            "timestamp": [START + timedelta(seconds=5), START],
        }
    )
    matrix = build_matrix(spec.compute(_history()), ticks, spec)
    assert matrix.rows == []
    assert matrix.skipped == [
        (0, "no coin_metrics row at the tick"),
        (1, "no coin_metrics row at the tick"),
    ]


def test_null_base_feature_is_never_filled_with_a_constant() -> None:
    history = _history().with_columns(
        pl.when(pl.col("mint") == "A").then(None).otherwise(pl.col("num_buys")).alias("num_buys")
    )
    spec = FeatureSpec.from_model(["num_buys", "price_roc_5"])
    ticks = pl.DataFrame({"mint": ["A", "B"], "timestamp": [START + timedelta(seconds=190)] * 2})
    matrix = build_matrix(compute(history, spec.windows), ticks, spec)
    assert matrix.rows == [1]
    assert matrix.skipped == [(0, "NULL in a base column the model uses")]


def test_a_feature_value_beyond_float32_refuses_only_its_row() -> None:
    """Both model kinds compute in float32: 1e300 would be infinite there (scikit-learn's
    estimator raises for the whole batch, the compiled forest and XGBoost predict as if
    it were infinity)."""
    history = _history().with_columns(
        pl.when(pl.col("mint") == "A")
        .then(1e300)
        .otherwise(pl.col("volume_sol"))
        .alias("volume_sol")
    )
    spec = FeatureSpec.from_model(["volume_sol", "price_close"])
    ticks = pl.DataFrame({"mint": ["A", "B"], "timestamp": [START + timedelta(seconds=190)] * 2})
    matrix = build_matrix(spec.compute(history), ticks, spec)
    assert matrix.rows == [1]
    assert matrix.skipped == [(0, "feature value beyond float32")]
    assert matrix.values.shape == (1, 2)


def test_the_shared_frame_gives_every_model_exactly_its_own_features() -> None:
    """Models with equal windows share one computation per batch; it must change nothing."""
    from features.columns import normalise
    from features.engineering import engineered_names

    history = normalise(
        pl.read_csv(Path(__file__).resolve().parents[1] / "fixtures/features/coin_metrics.csv")
    )
    lists = [
        ["price_close", "price_roc_5", "volume_spike_10_has_data"],
        ["price_roc_15_has_data", *engineered_names([5, 10, 15])[:30]],
        ["volume_sol", "whale_activity_10", "price_roc_5_has_data"],
    ]
    for features in lists:
        spec = FeatureSpec.from_model(features)
        alone = spec.compute(history).select(spec.features)
        shared = spec.compute_shared(history).select(spec.features)
        assert alone.equals(shared), features


def test_rows_without_a_column_the_model_reads_name_every_missing_one() -> None:
    import numpy as np

    from features.matrix import TickRows

    rows = TickRows(np.zeros((1, 2)), {"price_close": 0, "volume_sol": 1}, {("A", START): 0})
    spec = FeatureSpec.from_model(["num_buys", "price_close", "num_sells"])
    with pytest.raises(UnknownFeatureError) as err:
        rows.matrix([("A", START)], spec)
    assert err.value.names == ["num_buys", "num_sells"]
