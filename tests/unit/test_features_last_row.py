"""The serving engine (newest row per coin, NumPy) equals `compute()` at that row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from test_features_properties import SETTINGS, START, _coins

from actors.runtime.messages import Tick
from actors.scoring.prefix_cache import phase_rows
from actors.scoring.shared_features import compute_for, rows_for, tick_frame
from features import compute, engineered_names, last_row, prefix_state
from features.columns import UTC_TIME
from features.engineering import HAS_DATA_SUFFIX
from features.last_row import _sliding_sums, _typed, compute_last, sorted_runs
from features.matrix import FeatureSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "features"
META = json.loads((FIXTURES / "meta.json").read_text())


def _flags(windows: list[int]) -> list[str]:
    return [
        f"{n}{HAS_DATA_SUFFIX}" for n in engineered_names(windows) if n.rpartition("_")[2].isdigit()
    ]


def _compare(history: pl.DataFrame, windows: list[int], seed: pl.DataFrame | None = None) -> None:
    flags = _flags(windows)
    full = compute(history, windows, seed=seed, has_data_for=flags)
    expected = full.group_by("mint", maintain_order=True).tail(1)
    last = compute_last(history, windows, seed=seed, has_data_for=flags)
    assert last.mints == expected["mint"].to_list()
    assert last.timestamps == expected["timestamp"].to_list()
    names = [*engineered_names(windows), *flags]
    columns = {n: i for i, n in enumerate(last.columns)}
    ours = last.values[:, [columns[n] for n in names]]
    theirs = expected.select(names).cast(pl.Float64).to_numpy()
    bad = np.abs(ours - theirs) > np.maximum(1e-12, 1e-9 * np.abs(theirs))
    assert not bad.any(), {
        names[int(j)]: (expected["mint"][int(i)], ours[i, j], theirs[i, j])
        for i, j in zip(*np.where(bad), strict=True)
    }
    base = [c for c in history.columns if c not in ("mint", "timestamp")]
    ours_base = last.values[:, [columns[c] for c in base]]
    theirs_base = expected.select(base).cast(pl.Float64).to_numpy()
    assert np.array_equal(ours_base, theirs_base, equal_nan=True)


def test_every_row_of_the_golden_data_as_the_newest_row() -> None:
    """Each golden row is the tick once: the history is its coin's rows up to it.

    Compared with `compute()` over the same rows, not with the golden file row by
    row: the golden rows were computed with the coin's later rows present, and
    `minutes_since_ath` depends on whether the loaded rows hold any breakout, so
    a row before a coin's first breakout reads differently as of its own time.
    The newest row of each coin is compared with the golden file as well.
    """
    history = pl.read_csv(FIXTURES / "coin_metrics.csv").with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC")
    )
    ordered = history.sort(["mint", "timestamp"], maintain_order=True).with_columns(
        pl.int_range(pl.len()).over("mint").alias("_n")
    )
    cuts = ordered.select("mint", pl.col("_n").alias("_cut"))
    prefixes = (
        ordered.join(cuts, on="mint")
        .filter(pl.col("_n") <= pl.col("_cut"))
        .with_columns((pl.col("mint") + "#" + pl.col("_cut").cast(pl.String)).alias("mint"))
        .drop("_n", "_cut")
    )
    windows = META["window_sizes"]
    assert prefixes["mint"].n_unique() == META["rows"]
    _compare(prefixes, windows)

    expected = (
        pl.read_csv(FIXTURES / "expected_features.csv")
        .with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
        .sort(["mint", "timestamp"], maintain_order=True)
        .group_by("mint", maintain_order=True)
        .tail(1)
    )
    last = compute_last(history, windows)
    assert last.mints == expected["mint"].to_list()
    columns = {n: i for i, n in enumerate(last.columns)}
    for name in META["engineered_columns"]:
        ours = last.values[:, columns[name]]
        theirs = expected[name].cast(pl.Float64).to_numpy()
        wrong = np.abs(ours - theirs) > np.maximum(1e-12, 1e-9 * np.abs(theirs))
        assert not wrong.any(), (name, expected["mint"].filter(pl.Series(wrong)).to_list())


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    windows=st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True),
)
def test_newest_rows_equal_compute_for_any_windows(seed: int, windows: list[int]) -> None:
    _compare(_coins(seed, count=6, max_rows=70), windows)


@SETTINGS
@given(seed=st.integers(0, 10_000), keep=st.integers(1, 60))
def test_newest_rows_with_prefix_state_equal_compute(seed: int, keep: int) -> None:
    """The batch path: a window of newest rows plus the state of the rows before it."""
    history = _coins(seed, count=5, max_rows=150).sort(["mint", "timestamp"])
    numbered = history.with_columns(pl.int_range(pl.len()).over("mint").alias("_n"))
    sizes = numbered.group_by("mint").agg(pl.len().alias("_len"))
    numbered = numbered.join(sizes, on="mint")
    head = numbered.filter(pl.col("_n") < pl.col("_len") - keep).drop("_n", "_len")
    window = numbered.filter(pl.col("_n") >= pl.col("_len") - keep).drop("_n", "_len")
    seed_state = prefix_state(head) if head.height else None
    _compare(window, [5, 10, 15], seed=seed_state)


def test_flat_prices_zeros_and_nulls_in_the_newest_rows() -> None:
    rows = 20
    ts = [START + timedelta(minutes=i) for i in range(rows)]
    flat = pl.DataFrame(
        {
            "mint": ["F"] * rows,
            "timestamp": ts,
            "price_high": [1.0] * rows,
            "price_close": [1.0] * rows,
            "market_cap_close": [0.0] * rows,
            "volume_sol": [2.0] * (rows - 1) + [None],
            "volatility_pct": [None] * rows,
            "unique_signer_ratio": [0.1] * rows,
            "net_volume_sol": [1.0, -1.0] * (rows // 2),
            "dev_sold_amount": [None] * rows,
            "buy_pressure_ratio": [0.5] * rows,
            "whale_buy_volume_sol": [0.0] * rows,
            "whale_sell_volume_sol": [None] * rows,
        }
    )
    nulls = flat.with_columns(
        pl.lit("N").alias("mint"),
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(None)
        .otherwise(pl.col("price_close"))
        .alias("price_close"),
        pl.when(pl.int_range(pl.len()) == rows - 1)
        .then(None)
        .otherwise(pl.col("price_high"))
        .alias("price_high"),
    )
    _compare(pl.concat([flat, nulls], how="vertical_relaxed"), [1, 2, 5, 15])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_values_near_the_top_of_double_overflow_silently_as_compute_gives_them() -> None:
    """Sums, products and quotients of hostile collector values overflow to inf (and a
    running sum's compensation to NaN), which the features map to 0 as compute does:
    no RuntimeWarning per batch (found by tests/integration/test_intake_property.py)."""
    rows = 20
    half = rows // 2
    huge = 1.7e308
    history = pl.DataFrame(
        {
            "mint": ["H"] * rows,
            "timestamp": [START + timedelta(minutes=i) for i in range(rows)],
            "price_high": [1e-300] * half + [huge] * half,
            "price_close": [1e-300] * half + [huge] * half,  # price_roc: huge / tiny
            "market_cap_close": [1e-300] * half + [huge] * half,
            "volume_sol": [huge] * rows,  # window sums and their mean
            "volatility_pct": [huge] * rows,
            "unique_signer_ratio": [huge, -huge] * half,  # the engine's running sum
            "net_volume_sol": [huge, -huge] * half,
            "dev_sold_amount": [huge] * rows,
            "buy_pressure_ratio": [huge] * rows,
            "whale_buy_volume_sol": [huge] * rows,  # whale activity: buy + sell
            "whale_sell_volume_sol": [huge] * rows,
        }
    )
    _compare(history, [1, 2, 5, 15])


def test_a_repeated_timestamp_uses_the_later_row_as_compute_does() -> None:
    coin = _coins(3, count=1, max_rows=30).sort("timestamp")
    again = coin.tail(1).with_columns(pl.col("price_close") * 2)
    _compare(pl.concat([coin, again]), [5, 10])


def test_serving_rows_fall_back_to_polars_for_a_tick_that_is_not_the_newest_row() -> None:
    history = _coins(11, count=3, max_rows=40).sort(["mint", "timestamp"])
    spec = FeatureSpec.from_model(["price_close", *engineered_names([5, 10])[:20]])
    newest = history.group_by("mint", maintain_order=True).tail(1)
    older = history.group_by("mint", maintain_order=True).head(1)
    for chosen in (newest, older):
        ticks = [
            Tick(i, row["mint"], row["timestamp"], 1, 0.0)
            for i, row in enumerate(chosen.iter_rows(named=True))
        ]
        prefix = pl.DataFrame()
        frame = tick_frame(ticks)
        served = rows_for(spec, history, prefix, "all", frame)
        reference = compute_for(spec, history, prefix, "all", frame)
        keys = list(zip(frame["mint"].to_list(), frame["timestamp"].to_list(), strict=True))
        matrix = served.matrix(keys, spec)
        assert matrix.rows == [0, 1, 2]
        expected = reference.select(spec.features).cast(pl.Float64).to_numpy()
        order = {
            k: i for i, k in enumerate(zip(reference["mint"], reference["timestamp"], strict=True))
        }
        expected = expected[[order[k] for k in keys]]
        assert np.allclose(matrix.values, expected, rtol=1e-9, atol=1e-12)


def test_nan_reads_as_null_when_the_history_has_the_catalogue_types() -> None:
    """The batcher's history has the catalogue types, so the serving engine skips
    `normalise` (which turns NaN into NULL): a NaN stored in the database must still
    read as a missing value, as it does for `compute()`."""
    rng = np.random.default_rng(11)
    history = _coins(11, count=4, max_rows=60)
    columns = ["price_high", "price_close", "volume_sol", "dev_sold_amount", "net_volume_sol"]
    history = history.with_columns(
        pl.when(pl.Series(rng.random(history.height) < 0.2))
        .then(float("nan"))
        .otherwise(pl.col(c))
        .alias(c)
        for c in columns
    )
    assert _typed(history) is history  # the path without `normalise`
    assert history["price_high"].is_nan().sum() > 0
    _compare(history, [5, 10, 15])
    head, window = history.head(history.height // 2), history.tail(history.height // 2)
    _compare(window, [5, 10, 15], seed=prefix_state(head))


# Small values: sums of most are exact, so "nets to zero" really is zero, and zero
# prices and market caps exercise every division guard. Negative dev sales
# (corrections) reach the branch of dev_sold_spike that sums the window. Signer
# ratios, volatilities and ATH distances (a high of 3) are not exact in binary, and
# land exactly on a threshold now and then (a mean ratio of 0.15, a volatility of 1.5
# times its mean, an unchanged distance trend), where the flag depends on the order
# the window is summed in.
_POOLS = {
    "price_high": (0.0, 1.0, 2.0, 3.0, 4.0),
    "price_close": (0.0, 1.0, 2.0, 3.0),
    "market_cap_close": (0.0, 1.0, 3.0),
    "volume_sol": (0.0, 1.0, 2.5),
    "net_volume_sol": (-1.0, 0.0, 1.0),
    "whale_buy_volume_sol": (0.0, 2.0),
    "whale_sell_volume_sol": (0.0, 1.0),
    "dev_sold_amount": (-1.0, 0.0, 1.0),
    "volatility_pct": (0.0, 0.1, 0.2, 1.0, 10.0),
    "buy_pressure_ratio": (0.0, 0.5, 1.0),
    "unique_signer_ratio": (0.1, 0.5),
}


def _edge_coin(rng: np.random.Generator, mint: str, rows: int, nan: bool) -> pl.DataFrame:
    """One coin whose columns have runs of missing values and runs of zeros."""
    gaps = rng.choice([1, 30, 600, 7200], size=rows).cumsum()
    data: dict[str, object] = {
        "mint": [mint] * rows,
        "timestamp": [START + timedelta(seconds=int(g)) for g in gaps],
    }
    for name, pool in _POOLS.items():
        values = rng.choice(pool, size=rows)
        missing = rng.random(rows) < 0.1
        for run_value in (None, 0.0):  # one run of each, anywhere (the first row included)
            if rng.random() < 0.5:
                start = int(rng.integers(0, rows))
                end = start + int(rng.integers(1, rows + 1))
                if run_value is None:
                    missing[start:end] = True
                else:
                    values[start:end] = 0.0
        column = [None if m else float(v) for v, m in zip(values, missing, strict=True)]
        data[name] = [float("nan") if nan and v is None else v for v in column]
    return pl.DataFrame(data, schema_overrides={n: pl.Float64 for n in _POOLS})


def _edge_batch(seed: int, lengths: list[int], nan: bool) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.concat([_edge_coin(rng, f"E{i}", n, nan) for i, n in enumerate(lengths)])


@st.composite
def _batches(draw: st.DrawFn) -> tuple[list[int], list[int], bool, int]:
    """Windows from 2-30 and coins of 1 to 3w+2 rows (w the largest window); the longest
    coin often has exactly w, w+1 or 2w+1 rows of one of the windows, where a read
    `w` rows back lands on the first column of the batch or just before it."""
    windows = draw(st.lists(st.integers(2, 30), min_size=1, max_size=3, unique=True))
    w = draw(st.sampled_from(windows))
    longest = draw(
        st.one_of(
            st.sampled_from([w, w + 1, 2 * w + 1]),
            st.integers(1, 3 * max(windows) + 2),
        )
    )
    others = draw(st.lists(st.integers(1, longest), min_size=0, max_size=4))
    lengths = draw(st.permutations([longest, *others]))
    return windows, lengths, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batches())
def test_newest_rows_equal_compute_for_batches_of_any_shape(
    batch: tuple[list[int], list[int], bool, int],
) -> None:
    """Every coin's newest row equals compute() whatever the batch's lengths: short coins
    padded beside long ones, NaN/NULL and zero runs, the longest coin at a window edge."""
    windows, lengths, nan, seed = batch
    _compare(_edge_batch(seed, lengths, nan), windows)


@pytest.mark.parametrize("w", [2, 7, 30])
@pytest.mark.parametrize("extra", [0, 1, 2])  # the longest coin has w, w+1 and 2w+1 rows
def test_newest_rows_equal_compute_when_the_longest_coin_ends_at_a_window_edge(
    w: int, extra: int
) -> None:
    longest = w + extra if extra < 2 else 2 * w + 1
    for seed in range(4):
        _compare(_edge_batch(seed, [longest, 1, max(1, longest // 2), longest], seed % 2 == 1), [w])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    windows=st.lists(st.integers(1, 20), min_size=1, max_size=3, unique=True),
    width=st.integers(1, 40),
)
def test_sliding_sums_are_polars_rolling_sums_bit_for_bit(
    seed: int, windows: list[int], width: int
) -> None:
    """The engine's summation order, including NULLs, infinities and short coins: at the
    last two rows every sum equals Polars' rolling_sum exactly (no tolerance)."""
    rng = np.random.default_rng(seed)
    coins = 4
    grids = []
    for scale in (1.0, 1e6):
        grid = np.round(rng.random((coins, width)) * scale, 4)
        grid[rng.random((coins, width)) < 0.15] = np.nan
        grid[rng.random((coins, width)) < 0.03] = np.inf
        grid[rng.random((coins, width)) < 0.03] = -np.inf
        grids.append(grid)
    lengths = [width, *rng.integers(1, width + 1, size=coins - 1).tolist()]
    for grid in grids:
        for coin, length in enumerate(lengths):
            grid[coin, : width - length] = np.nan  # rows before a coin's first row
    sums, counts = _sliding_sums(grids, windows)
    for g, grid in enumerate(grids):
        for j, w in enumerate(windows):
            for coin, length in enumerate(lengths):
                rows = pl.Series(grid[coin, width - length :]).fill_nan(None)
                expected = rows.rolling_sum(w, min_samples=1).to_numpy()[-2:]
                assert np.array_equal(
                    sums[g, j, coin, 2 - len(expected) :], expected, equal_nan=True
                )
                present = rows.is_not_null().cast(pl.Float64).rolling_sum(w, min_samples=1)
                assert np.array_equal(
                    counts[g, j, coin, 2 - len(expected) :], present.to_numpy()[-2:]
                )


def _pandas_flag(feature: str, w: int, coin: pl.DataFrame) -> int:
    """The flag as the Training Service's pandas computes it (FEATURES.md)."""
    frame = coin.to_pandas()
    if feature == "wash_trading_flag":
        return int(frame["unique_signer_ratio"].rolling(w, min_periods=1).mean().iloc[-1] < 0.15)
    if feature == "volatility_spike":
        volatility = frame["volatility_pct"]
        return int(volatility.iloc[-1] > 1.5 * volatility.rolling(w, min_periods=1).mean().iloc[-1])
    ath = frame["price_high"].cummax()
    trend = ((ath - frame["price_close"]) / ath * 100).rolling(w, min_periods=1).mean()
    return int(trend.diff().iloc[-1] < 0)


@pytest.mark.parametrize(
    ("feature", "w", "columns"),
    [
        # The newest window's mean is 0.15 exactly; the sum slid over all four rows gives
        # 0.14999999999999997 (flag 1), the window summed alone 0.15 (flag 0).
        ("wash_trading_flag", 2, {"unique_signer_ratio": [0.1, 0.3, 0.05, 0.25]}),
        # 0.3 is exactly 1.5 times the mean 0.2: slid 0.19999999999999996 (spike 1).
        ("volatility_spike", 3, {"volatility_pct": [0.2, 0.7, 0.1, 0.2, 0.3]}),
        # The distance leaving the window equals the one entering: the trend is unchanged
        # (no approach), while the two windows summed alone differ by an ulp; in the
        # second case the window before the newest row has lost a row already.
        (
            "ath_approach",
            3,
            {"price_high": [3.0, 2.0, 3.0, 1.0], "price_close": [1.0, 0.0, 2.0, 1.0]},
        ),
        (
            "ath_approach",
            3,
            {"price_high": [3.0, 3.0, 1.0, 1.0, 2.0], "price_close": [2.0, 1.0, 1.0, 2.0, 1.0]},
        ),
    ],
)
def test_a_flag_at_an_exact_tie_is_what_the_running_sum_gives(
    feature: str, w: int, columns: dict[str, list[float]]
) -> None:
    """Rolling means compared with a threshold: a tie is decided by the last ulp, so
    serving must sum in the engine's (and pandas') order, not each window afresh."""
    rows = len(next(iter(columns.values())))
    # Every other comparison far from its threshold: ratio and volatility constant, the
    # ATH distance falling steadily.
    data: dict[str, list[float]] = {name: [1.0] * rows for name in _POOLS}
    data |= {"price_high": [10.0] * rows, "price_close": [1.0 + i / 2 for i in range(rows)]}
    data.update(columns)
    coin = pl.DataFrame(
        {"mint": ["T"] * rows, "timestamp": [START + timedelta(minutes=i) for i in range(rows)]}
    ).with_columns(pl.Series(name, values, dtype=pl.Float64) for name, values in data.items())
    name = f"{feature}_{w}"
    last = compute_last(coin, [w])
    served = last.values[0, last.columns.index(name)]
    assert served == compute(coin, [w])[name][-1] == _pandas_flag(feature, w, coin)
    _compare(coin, [w])


def test_the_first_loaded_row_breaks_out_over_the_prefix_ath() -> None:
    """The window's first row is compared with the ATH of the rows before it (the prefix
    state): a breakout there is the newest row's last breakout."""
    coin = _edge_batch(0, [3], nan=False).with_columns(
        pl.Series("timestamp", [START + timedelta(minutes=m) for m in (0, 10, 20)]),
        pl.Series("price_high", [2.0, 3.0, 1.0]),
    )
    head, window = coin.head(1), coin.tail(2)
    last = compute_last(window, [2], seed=prefix_state(head))
    assert last.values[0, last.columns.index("minutes_since_ath")] == 10.0
    _compare(window, [2], seed=prefix_state(head))


@pytest.mark.parametrize("minutes", [59, 60, 1440, 1441])
def test_ath_age_flags_at_their_boundaries(minutes: int) -> None:
    """The newest row exactly 60 or 1440 minutes after the ATH: recent / old as compute() says."""
    coin = _edge_batch(0, [2], nan=False).with_columns(
        pl.Series("timestamp", [START, START + timedelta(minutes=minutes)]),
        pl.Series("price_high", [4.0, 1.0]),
    )
    _compare(coin, [2])


def test_base_columns_only_when_features_are_not_engineered() -> None:
    history = _edge_batch(5, [3, 1], nan=False)
    last = compute_last(history, [2], engineer=False)
    expected = history.sort(["mint", "timestamp"]).group_by("mint", maintain_order=True).tail(1)
    assert last.mints == ["E0", "E1"] and last.columns == list(_POOLS)
    assert np.array_equal(last.values, expected.select(list(_POOLS)).to_numpy(), equal_nan=True)
    assert compute_last(history.select("mint", "timestamp"), [2], engineer=False).values.shape == (
        2,
        0,
    )


def test_a_frame_without_rows_gives_no_rows_and_every_column_like_compute() -> None:
    """An empty history (drawn now and then by the property tests) is an answer, not a crash."""
    empty = _coins(0, count=1, max_rows=5).clear()
    windows = [5, 10]
    last = compute_last(empty, windows, has_data_for=["volume_sol" + HAS_DATA_SUFFIX])
    assert last.mints == [] and last.timestamps == []
    assert last.values.shape == (0, len(last.columns))
    assert set(engineered_names(windows)) <= set(last.columns)
    assert compute(empty, windows).height == 0


def test_each_phase_key_reads_only_its_own_prefix_rows() -> None:
    """A batch's prefix frame holds one state per coin and phase key; the features of a
    key are seeded with its rows only (a NULL key is nobody's), whether the frame holds
    one key or several."""
    full = (
        _coins(5, count=4, max_rows=80)
        .sort(["mint", "timestamp"])
        .with_columns((pl.int_range(pl.len()) % 3 + 1).alias("phase_id_at_time"))
    )
    window = full.group_by("mint", maintain_order=True).tail(12)
    head = full.join(window, on=["mint", "timestamp"], how="anti")
    spec = FeatureSpec.from_model(["price_close", *engineered_names([5, 10])[:30]])
    states = {key: prefix_state(phase_rows(head, key)) for key in ("all", "1", "2,3")}
    keyed = {k: s.with_columns(pl.lit(k).alias("phase_key")) for k, s in states.items()}
    nobody = keyed["all"].with_columns(pl.lit(None, dtype=pl.String).alias("phase_key"))
    for key, state in states.items():
        own = phase_rows(window, key)
        newest = own.group_by("mint", maintain_order=True).tail(1)
        frame = tick_frame(
            [Tick(0, r["mint"], r["timestamp"], 1, 0.0) for r in newest.iter_rows(named=True)]
        )
        expected = spec.compute_shared_last(own, seed=state)
        for prefix in (pl.concat([*keyed.values(), nobody]), keyed[key]):
            served = rows_for(spec, window, prefix, key, frame)
            assert list(served.index) == list(zip(expected.mints, expected.timestamps, strict=True))
            assert np.array_equal(served.values, expected.values, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 30),
    unit=st.sampled_from(["us", "ns", "ms"]),
    shuffle=st.booleans(),
)
def test_sorted_runs_equal_a_sort_and_group_by(
    seed: int, rows: int, unit: str, shuffle: bool
) -> None:
    """Skipping the sort of an already sorted frame changes nothing: mints that order
    differently by bytes and by case, repeated and NULL times, any time unit."""
    rng = np.random.default_rng(seed)
    mints = rng.choice(["b", "B", "a", "ab", "é", "\u4e00"], size=rows).tolist()
    seconds = rng.integers(0, 5, size=rows).tolist()
    frame = pl.DataFrame(
        {
            "mint": mints,
            "timestamp": [
                None if rng.random() < 0.1 else START + timedelta(microseconds=s * 7)
                for s in seconds
            ],
            "row": list(range(rows)),
        },
        schema={"mint": pl.String(), "timestamp": pl.Datetime(unit, "UTC"), "row": pl.Int64()},
    )
    ordered = frame.sort(["mint", "timestamp"], maintain_order=True)
    sizes = ordered.group_by("mint", maintain_order=True).len()
    by_mint = frame.sort("mint", maintain_order=True)  # times in any order within a coin
    by_case = ordered.sort(pl.col("mint").str.to_lowercase(), maintain_order=True)
    for given_frame in (frame, by_mint, by_case, ordered) if shuffle else (ordered,):
        got, coins, counts = sorted_runs(given_frame)
        assert got.equals(ordered)
        assert coins == sizes["mint"].to_list()
        assert counts.tolist() == sizes["len"].to_list()


def test_the_tick_frame_holds_the_ticks_times_to_the_microsecond() -> None:
    """Times in any zone, without one (UTC), before 1970 and at microsecond precision
    become the same UTC instants as Polars' own conversion of the datetimes gives."""
    berlin = ZoneInfo("Europe/Berlin")
    moments = [
        datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 0, 0, 1, tzinfo=berlin),
        datetime(2026, 10, 25, 2, 30, tzinfo=berlin),
        datetime(2026, 1, 1, 12, 0, 0, 7),  # no zone
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    ticks = [Tick(i, f"coin{i}", m, 1, 0.0) for i, m in enumerate(moments)]
    expected = pl.DataFrame(
        {"mint": [t.coin_id for t in ticks], "timestamp": moments},
        schema={"mint": pl.String(), "timestamp": UTC_TIME},
    )
    assert_frame_equal(tick_frame(ticks), expected)
    assert_frame_equal(tick_frame([]), expected.clear())


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 70),
    windows=st.lists(st.integers(1, 80), min_size=1, max_size=4, unique=True),
)
def test_window_sums_of_stacked_grids_are_those_of_each_grid_bit_for_bit(
    seed: int, width: int, windows: list[int]
) -> None:
    """Summing (and averaging) every grid's window in one NumPy call rounds as a grid
    alone does:
    NaN, infinities, -0.0, magnitudes far apart, windows wider than the grid."""
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e300, -1e-300, 0.1])
    grids = []
    for _ in range(int(rng.integers(1, 5))):
        grid = rng.normal(size=(int(rng.integers(1, 9)), width)) * 10.0 ** rng.integers(-8, 9)
        grid = grid[:1].repeat(len(grid), axis=0) if rng.random() < 0.1 else grid
        picks = rng.random(grid.shape) < 0.15
        grid[picks] = rng.choice(special, size=int(picks.sum()))
        grids.append(grid)
    coins = min(len(g) for g in grids)
    grids = [g[:coins] for g in grids]
    with np.errstate(invalid="ignore"):  # inf - inf in a window, as in the engine
        sums, counts = last_row._window_sums(grids, windows)
        _check_window_sums(grids, windows, sums, counts)


def _check_window_sums(
    grids: list[np.ndarray], windows: list[int], sums: np.ndarray, counts: np.ndarray
) -> None:
    width = grids[0].shape[1]
    for i, grid in enumerate(grids):
        for j, w in enumerate(windows):
            for k, end in enumerate((width - 1, width)):
                window = grid[:, max(end - w, 0) : end]
                assert sums[i, j, :, k].tobytes() == last_row._sum(window).tobytes()
                assert np.array_equal(counts[i, j, :, k], last_row._count(window))
    stack = np.stack(grids)
    for w in windows:
        total, mean, count = last_row._stacked_sums(stack[:, :, max(width - w, 0) :])
        for i, grid in enumerate(grids):
            window = grid[:, max(width - w, 0) :]
            assert total[i].tobytes() == last_row._sum(window).tobytes()
            assert mean[i].tobytes() == last_row._mean(window).tobytes()
            assert np.array_equal(count[i], last_row._count(window))
