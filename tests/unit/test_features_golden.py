"""Our Polars engine against golden data made by the Training Service's own code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features import compute, engineered_names

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "features"
META = json.loads((FIXTURES / "meta.json").read_text())


@pytest.fixture(scope="module")
def computed_and_expected() -> tuple[pl.DataFrame, pl.DataFrame]:
    history = pl.read_csv(FIXTURES / "coin_metrics.csv")
    expected = (
        pl.read_csv(FIXTURES / "expected_features.csv")
        .with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
        .sort(["mint", "timestamp"], maintain_order=True)
    )
    return compute(history, META["window_sizes"]), expected


def test_engineered_names_follow_the_training_service_order() -> None:
    assert engineered_names(META["window_sizes"]) == META["engineered_columns"]


def test_rows_come_back_sorted_per_coin_with_nothing_lost(computed_and_expected) -> None:
    computed, expected = computed_and_expected
    assert computed.height == expected.height == META["rows"]
    assert computed["mint"].to_list() == expected["mint"].to_list()
    assert computed["timestamp"].to_list() == expected["timestamp"].to_list()


@pytest.mark.parametrize("column", META["engineered_columns"])
def test_every_engineered_column_matches_golden_data(computed_and_expected, column: str) -> None:
    computed, expected = computed_and_expected
    ours = computed[column].cast(pl.Float64).to_numpy()
    theirs = expected[column].cast(pl.Float64).to_numpy()
    tolerance = np.maximum(1e-12, 1e-9 * np.abs(theirs))
    wrong = np.abs(ours - theirs) > tolerance
    assert not wrong.any(), (
        f"{column}: {int(wrong.sum())} rows differ, e.g. coin "
        f"{computed['mint'][int(np.argmax(wrong))]}: "
        f"ours={ours[wrong][:3]} theirs={theirs[wrong][:3]}"
    )


def test_coins_with_one_to_three_rows_are_computed(computed_and_expected) -> None:
    computed, _ = computed_and_expected
    sizes = computed.group_by("mint").len()
    assert {1, 3} <= set(sizes["len"].to_list())


def test_flags_are_integers_and_no_null_nan_or_inf_remains(computed_and_expected) -> None:
    computed, _ = computed_and_expected
    for column in META["engineered_columns"]:
        series = computed[column]
        assert series.null_count() == 0, column
        if series.dtype.is_float():
            assert np.isfinite(series.to_numpy()).all(), column
    for flag in ("ath_breakout", "ath_is_recent", "dev_sold_flag", "volume_flip_5"):
        assert computed[flag].dtype.is_integer()
        assert set(computed[flag].unique().to_list()) <= {0, 1}
