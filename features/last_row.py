"""The engineered features of each coin's newest row only, in NumPy.

At serving time a batch needs one feature row per coin: the row at the tick,
which is the newest row of the history loaded for it. `features.engineering`
computes every row of the window with Polars window expressions, whose fixed
cost per call (~150 expressions) and per row dominated the predict path. Here
the loaded rows become one (coins x rows) array per column, right-aligned so
that column -1 is every coin's newest row; rolling windows are slices of the
last `w` columns and running values are accumulations along the rows. Rows
before a coin's first loaded row are NaN, which every statistic skips exactly
as a missing row, so coins of different lengths share one array.

The result must equal `engineering.compute` at the newest row of each coin,
NULL fill included: tests compare the two on the golden data and on generated
histories (zeros, NULLs, flat stretches, duplicate timestamps, prefix seeds).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from features.columns import BASE_COLUMNS, normalise
from features.engineering import _has_data_window, _validate_windows, engineered_names

_MINUTE_US = 60_000_000.0
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class LastRows:
    """One row per coin: its newest row's base columns and engineered features."""

    mints: list[str]
    timestamps: list[datetime]  # each coin's newest row's timestamp
    values: np.ndarray  # float64 [coins, columns]; NULL base values are NaN
    columns: list[str]


def sorted_runs(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[str], np.ndarray]:
    """`frame` sorted by (mint, timestamp) with ties in their order (the frame itself when
    it is so already, as the batcher's history is), its coins in that order and their
    row counts. Checked on NumPy keys: a frame sort and a group-by cost a fixed ~0.1 ms
    each per batch (issue 23)."""
    mint = frame.get_column("mint")
    if frame.height and mint.null_count() == 0:
        names = np.array(mint.to_list(), dtype=object)
        starts = np.flatnonzero(np.concatenate([[True], names[1:] != names[:-1]]))
        coins: list[str] = names[starts].tolist()
        keys = sort_keys(frame.get_column("timestamp"))
        later = keys[1:] >= keys[:-1]  # not a difference: NULL (int64 min) overflows it
        later[starts[1:] - 1] = True  # a new coin may start at any time
        if later.all() and all(a < b for a, b in itertools.pairwise(coins)):
            return frame, coins, np.diff(np.append(starts, frame.height))
    ordered = frame.sort(["mint", "timestamp"], maintain_order=True)
    sizes = ordered.group_by("mint", maintain_order=True).len()
    return ordered, sizes["mint"].to_list(), sizes["len"].to_numpy().astype(np.int64)


def sort_keys(times: pl.Series) -> np.ndarray:
    """The times as int64 values in the order a sort puts them (NULL first)."""
    if isinstance(times.dtype, pl.Datetime):
        return times.to_numpy().view(np.int64)  # NaT is the smallest int64
    return times.to_physical().fill_null(_NAT).to_numpy().astype(np.int64)


class _Grid:
    """Rows of a frame sorted by (mint, timestamp) placed in a right-aligned coins x rows grid."""

    def __init__(self, mints: list[str], counts: np.ndarray) -> None:
        self.mints = mints
        counts = counts.astype(np.int64, copy=False)
        self.coins = len(counts)
        self.width = int(counts.max()) if self.coins else 0
        starts = np.cumsum(counts) - counts  # also right for a frame of no coins
        coin = np.repeat(np.arange(self.coins), counts)
        offset = np.arange(int(counts.sum())) - np.repeat(starts, counts)
        self.row = coin
        self.col = offset + np.repeat(self.width - counts, counts)
        self.first_col = self.width - counts  # column of each coin's first loaded row
        self.valid = np.zeros((self.coins, self.width), dtype=bool)
        self.valid[self.row, self.col] = True
        self.last_index = np.cumsum(counts) - 1  # frame row of each coin's newest row

    def floats(self, values: np.ndarray) -> np.ndarray:
        grid = np.full((self.coins, self.width), np.nan)
        grid[self.row, self.col] = values
        return grid

    def times(self, values: np.ndarray) -> np.ndarray:
        grid = np.full((self.coins, self.width), _NAT, dtype=np.int64)
        grid[self.row, self.col] = values
        return grid


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    try:
        column = frame.get_column(name)
    except pl.exceptions.ColumnNotFoundError:
        return np.full(frame.height, np.nan)
    if column.dtype != pl.Float64():
        column = column.cast(pl.Float64)
    return column.to_numpy().astype(np.float64, copy=False)


def _filled(grid: _Grid, values: np.ndarray) -> np.ndarray:
    """NULL -> 0 on loaded rows only (padding stays missing)."""
    return np.where(grid.valid & np.isnan(values), 0.0, values)


def _count(window: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(~np.isnan(window), axis=1))


def _sum(window: np.ndarray) -> np.ndarray:
    """Sum of the present values; NaN when there is none (a NULL rolling sum)."""
    n = _count(window)
    total = np.nansum(window, axis=1)
    return np.where(n > 0, total, np.nan)


def _mean(window: np.ndarray) -> np.ndarray:
    n = _count(window)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = np.nansum(window, axis=1)
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _stacked_sums(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_sum`, `_mean` and `_count` of each grid's window in a stack [grid, coin, row]:
    each row is reduced as a grid alone reduces it (the same bits), in one call for all."""
    n = np.sum(~np.isnan(windows), axis=2)
    total = np.nansum(windows, axis=2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return np.where(n > 0, total, np.nan), mean, n


def _exact_mean(window: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """The value itself when every present value is equal, as pandas gives it;
    otherwise `mean` (the window's mean, computed here when not given)."""
    low, high = np.fmin.reduce(window, axis=1), np.fmax.reduce(window, axis=1)
    return np.where(low == high, high, _mean(window) if mean is None else mean)


def _sliding_sums(
    grids: Sequence[np.ndarray], windows: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling sums and counts [grid, window, coin, 2] of each grid at its last two rows,
    summed in the engine's order, bit for bit.

    Polars (like pandas, the Training Service's library) slides one running sum along
    each coin's rows: a value is added when it enters the window and subtracted when it
    leaves, each direction Kahan-compensated on its own; NULLs are skipped and
    infinities counted aside. A window summed afresh rounds differently now and then,
    by an ulp, which decides a comparison at an exact tie (a signer-ratio mean of
    0.15, a volatility of exactly 1.5 times its mean).
    """
    stack = np.stack(grids)  # [grid, coin, row]
    n_grids, coins, width = stack.shape
    n_windows = len(windows)
    # Rows first (each step reads contiguous memory); NULLs and infinities are zeroed
    # and masked out: `use` is 1.0 where a value takes part in the sum.
    finite = np.isfinite(stack)
    entering = np.ascontiguousarray(np.where(finite, stack, 0.0).transpose(2, 0, 1))
    use_in = np.ascontiguousarray(finite.transpose(2, 0, 1), dtype=np.float64)
    leaving = np.zeros((width, n_grids, n_windows, coins))
    use_out = np.zeros((width, n_grids, n_windows, coins))
    for j, w in enumerate(windows):
        if w < width:
            leaving[w:, :, j] = 0.0 - entering[: width - w]
            use_out[w:, :, j] = use_in[: width - w]
    shape = (n_grids, n_windows, coins)
    total, err_add, err_sub = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    y, t, step = np.empty(shape), np.empty(shape), np.empty(shape)
    sums = np.full((*shape, 2), np.nan)

    def kahan(value: np.ndarray, use: np.ndarray, err: np.ndarray) -> None:
        """total += value, compensated by `err`; where `use` is 0 both stay as they are."""
        nonlocal total, t
        np.multiply(err, use, out=step)
        np.subtract(value, step, out=y)  # value - err, 0 where unused
        np.add(total, y, out=t)
        np.subtract(t, total, out=step)
        np.subtract(step, y, out=step)  # the new compensation: (t - total) - y
        err *= 1.0 - use
        err += step  # the new one where used, the old one where not
        total, t = t, total

    # Finite values near the top of double overflow the running sum to inf, and its
    # compensation to NaN (inf - inf), as the engine's f64 arithmetic does, silently.
    with np.errstate(invalid="ignore", over="ignore"):
        for col in range(width):
            kahan(leaving[col], use_out[col], err_sub)
            kahan(entering[col][:, None, :], use_in[col][:, None, :], err_add)
            if col >= width - 2:
                sums[..., col - width + 2] = total
    # Counts and infinities are integers: differences of running counts give them.
    ends = np.array([width - 1, width])
    starts = np.maximum(ends[None, :] - np.array(windows)[:, None], 0)  # [window, 2]

    def in_window(marks: np.ndarray) -> np.ndarray:
        running = np.zeros((n_grids, coins, width + 1))
        np.cumsum(marks, axis=2, out=running[:, :, 1:])
        return (running[:, :, ends][:, :, None, :] - running[:, :, starts]).transpose(0, 2, 1, 3)

    counts = in_window(~np.isnan(stack))
    if np.isinf(stack).any():
        pos_inf, neg_inf = in_window(stack == np.inf), in_window(stack == -np.inf)
        non_finite = pos_inf + neg_inf
        sums = np.where(
            non_finite == 0,
            sums,
            np.where(
                non_finite == pos_inf, np.inf, np.where(non_finite == neg_inf, -np.inf, np.nan)
            ),
        )
    return np.where(counts > 0, sums, np.nan), counts


# (sums, means) [window, coin, 2] of a column -> how far its comparison is from the
# threshold [window, coin].
_Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]

# A window summed alone and the engine's sliding sum (two compensated additions per
# loaded row at most) both lie within a few hundred ulps of the loaded rows' absolute
# sum from the exact sum: a comparison farther from its threshold than this fraction of
# that absolute sum is decided the same by both.
_TIE_BAND = 1e-9


def _window_sums(
    grids: Sequence[np.ndarray], windows: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each window summed alone, as `_sliding_sums` shapes it (cheap, not bit-exact).
    The grids are stacked so that each window is one NumPy call for all of them: each
    row is reduced by the same pairwise sum as a grid alone, so the bits are the same."""
    stack = np.stack(grids)  # [grid, coin, row]
    width = stack.shape[2]
    sums = np.empty((len(grids), len(windows), stack.shape[1], 2))
    counts = np.empty_like(sums)
    for j, w in enumerate(windows):
        for k, end in enumerate((width - 1, width)):
            window = stack[:, :, max(end - w, 0) : end]
            n = np.sum(~np.isnan(window), axis=2)
            sums[:, j, :, k] = np.where(n > 0, np.nansum(window, axis=2), np.nan)
            counts[:, j, :, k] = n
    return sums, counts


def _threshold_sums(
    ties: dict[str, tuple[np.ndarray, _Distance]], windows: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Window sums and counts [column, window, coin, 2] of the columns compared with a
    threshold, equal to the engine's sliding sums wherever the comparison depends on it.

    The windows are summed alone, and again in the engine's order (`_sliding_sums`,
    ~1000 NumPy calls for 64 rows) only for the coins whose comparison lies within
    `_TIE_BAND` of its threshold: in practice exact ties, where the last ulp decides.
    """
    grids = [grid for grid, _ in ties.values()]
    sums, counts = _window_sums(grids, windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        near = np.zeros(grids[0].shape[0], dtype=bool)
        for i, (grid, distance) in enumerate(ties.values()):
            band = _TIE_BAND * np.nansum(np.abs(grid), axis=1)
            near |= np.any(distance(sums[i], means[i]) <= 2 * band, axis=0)
    if near.any():
        exact = _sliding_sums([grid[near] for grid in grids], windows)
        sums[:, :, near], counts[:, :, near] = exact
    return sums, counts


def _exact_std(
    window: np.ndarray, counted: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Sample std (ddof 1): NaN below two values, exactly 0 for equal values.
    `counted`: the window's `_count` and `_mean`, when known already."""
    n, mean = (_count(window), _mean(window)) if counted is None else counted
    # (An overflow of the square is ignored by `compute_last`, the only caller.)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.where(np.isnan(window), 0.0, window - mean[:, None])
        std = np.sqrt(np.sum(dev * dev, axis=1) / (n - 1))
    low, high = np.fmin.reduce(window, axis=1), np.fmax.reduce(window, axis=1)
    return np.where(n < 2, np.nan, np.where(low == high, 0.0, std))


def _flag(condition: np.ndarray) -> np.ndarray:
    """0/1 as float; comparisons with NaN are false, as NULL comparisons are in pandas."""
    return condition.astype(np.float64)


def _at(grid_values: np.ndarray, grid: _Grid, back: int) -> np.ndarray:
    """Each coin's value `back` rows before its newest row (NaN before its first row)."""
    col = grid.width - 1 - back
    if col < 0:
        return np.full(grid.coins, np.nan)
    return np.where(col >= grid.first_col, grid_values[:, col], np.nan)


def _minutes(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Minutes between two int64 microsecond arrays; NaN where either is missing."""
    missing = (later == _NAT) | (earlier == _NAT)
    with np.errstate(invalid="ignore"):
        diff = (later - np.where(missing, 0, earlier)).astype(np.float64) / _MINUTE_US
    return np.where(missing, np.nan, diff)


def _forward_fill(values: np.ndarray, missing: int | None = None) -> np.ndarray:
    """Each missing value takes the last present value before it along the rows.
    `missing`: the marker of a missing value (_NAT for times); None means NaN."""
    present = ~np.isnan(values) if missing is None else values != missing
    cols = np.arange(values.shape[1])
    last = np.where(present, cols, -1)
    np.maximum.accumulate(last, axis=1, out=last)
    filled = np.take_along_axis(values, np.maximum(last, 0), axis=1)
    return np.where(last >= 0, filled, np.nan if missing is None else missing)


def epoch_us(times: pl.Series) -> np.ndarray:
    """Microseconds since the epoch, NULL as _NAT. A microsecond column's own values
    (NumPy's NaT is _NAT) without a Polars expression (~0.1 ms per call on a batch);
    epoch("us") is absolute whatever another column's zone and unit."""
    dtype = times.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "us":
        return times.to_numpy().view(np.int64)
    return times.dt.epoch("us").fill_null(_NAT).to_numpy().astype(np.int64)


def _seed_arrays(grid: _Grid, seed: pl.DataFrame | None) -> dict[str, np.ndarray]:
    """The prefix state (features.running) of each coin in grid order; neutral without one."""
    n = grid.coins
    out = {
        "max": np.full(n, np.nan),
        "last_ath": np.full(n, np.nan),
        "dev": np.zeros(n),
        "first": np.full(n, _NAT, dtype=np.int64),
        "last_bo": np.full(n, _NAT, dtype=np.int64),
    }
    if seed is None or seed.is_empty() or n == 0:
        return out
    # The seed row of each grid coin (its last one, if a coin is listed twice); a NumPy
    # take instead of a join: this runs once per batch and a join's fixed cost counted.
    where = {mint: i for i, mint in enumerate(seed["mint"].to_list())}
    rows = np.array([where.get(mint, -1) for mint in grid.mints], dtype=np.int64)
    found = rows >= 0
    picked = np.where(found, rows, 0)

    def floats(name: str) -> np.ndarray:
        return np.where(found, _column(seed, name)[picked], np.nan)

    def times(name: str) -> np.ndarray:
        return np.where(found, epoch_us(seed[name])[picked], _NAT)

    out["max"] = floats("prefix_max_high")
    out["last_ath"] = floats("prefix_last_ath")
    out["dev"] = np.nan_to_num(floats("prefix_dev_sum"), nan=0.0)
    out["first"] = times("first_timestamp")
    out["last_bo"] = times("prefix_last_breakout")
    return out


def _typed(history: pl.DataFrame) -> pl.DataFrame:
    """`normalise` where it changes what this module reads: a frame whose columns have
    the catalogue types already (the batcher's history) is used as it is, because NaN
    and NULL both become NaN in the float arrays here. Saves ~1 ms per batch."""
    schema = history.schema
    if all(schema[name] == dtype for name, dtype in BASE_COLUMNS.items() if name in schema):
        return history
    return normalise(history)


def compute_last(
    history: pl.DataFrame,
    windows: Sequence[int],
    *,
    seed: pl.DataFrame | None = None,
    has_data_for: Iterable[str] = (),
    engineer: bool = True,
) -> LastRows:
    """`engineering.compute(history, windows, seed=..., has_data_for=...)` at each coin's
    newest row, plus that row's base columns (`engineer=False`: base columns only)."""
    frame, mints, counts = sorted_runs(_typed(history))
    grid = _Grid(mints, counts)
    base_names = [c for c in frame.columns if c not in ("mint", "timestamp")]
    last = grid.last_index
    read = {c: _column(frame, c) for c in base_names}  # the features read ~12 of them again
    base = np.column_stack([read[c][last] for c in base_names]) if base_names else None
    times = frame.get_column("timestamp")
    ts_us = epoch_us(times)
    timestamps = times[last].to_list() if grid.coins else []
    if not engineer:
        values = base if base is not None else np.empty((grid.coins, 0))
        return LastRows(grid.mints, timestamps, values, base_names)

    ws = _validate_windows(windows)
    flags = list(has_data_for)
    names = [*engineered_names(ws), *flags]
    if not grid.coins:  # as compute() answers an empty frame: no rows, every column
        return LastRows([], [], np.empty((0, len(base_names) + len(names))), [*base_names, *names])

    def column(name: str) -> np.ndarray:
        return read[name] if name in read else _column(frame, name)

    # A hostile collector value (near the top of double) overflows sums, products and
    # quotients to inf, as it does in the training engine; every inf becomes 0 below
    # (FEATURES.md). The overflow is expected there, not a RuntimeWarning per batch; the
    # blocks inside set their own invalid / divide handling.
    with np.errstate(over="ignore"):
        features = _engineered(column, grid, ts_us, ws, flags, _seed_arrays(grid, seed))
    engineered = np.column_stack([features[n] for n in names])
    # Every NULL / NaN / inf of the engineered block becomes 0, as fillna(0) does.
    engineered[~np.isfinite(engineered)] = 0.0
    values = engineered if base is None else np.hstack([base, engineered])
    return LastRows(grid.mints, timestamps, values, [*base_names, *names])


def _engineered(
    column: Callable[[str], np.ndarray],
    grid: _Grid,
    ts_us: np.ndarray,
    windows: tuple[int, ...],
    flags: list[str],
    seed: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    g = grid.floats
    high, close = g(column("price_high")), g(column("price_close"))
    volume = g(column("volume_sol"))
    ts = grid.times(ts_us)
    first_row = np.zeros_like(grid.valid)
    first_row[np.arange(grid.coins), grid.first_col] = True

    # ATH block over every loaded row (the running values need all of them).
    running = np.fmax(np.fmax.accumulate(high, axis=1), seed["max"][:, None])
    ath = np.where(np.isnan(high), np.nan, running)
    previous = np.concatenate([np.full((grid.coins, 1), np.nan), ath[:, :-1]], axis=1)
    previous = np.where(first_row, seed["last_ath"][:, None], previous)
    with np.errstate(invalid="ignore"):
        breakout = np.where(grid.valid, _flag(high > previous), np.nan)
    bo_ts = _forward_fill(np.where(breakout == 1, ts, _NAT), missing=_NAT)
    last_bo = np.where(bo_ts != _NAT, bo_ts, seed["last_bo"][:, None])
    any_bo = (np.nansum(breakout, axis=1) > 0) | (seed["last_bo"] != _NAT)
    loaded_first = ts[np.arange(grid.coins), grid.first_col]
    first_ts = np.where(seed["first"] != _NAT, seed["first"], loaded_first)
    since_first = _minutes(ts, np.broadcast_to(first_ts[:, None], ts.shape))
    minutes = np.where(any_bo[:, None], _minutes(ts, last_bo), since_first)
    minutes = np.where(grid.valid, minutes, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.where(ath != 0, (ath - close) / ath * 100, np.nan)
    distance_filled = _filled(grid, distance)
    minutes_filled = _filled(grid, minutes)
    m_last = minutes[:, -1]

    out: dict[str, np.ndarray] = {
        "rolling_ath": ath[:, -1],
        "ath_distance_pct": distance_filled[:, -1],
        "ath_breakout": breakout[:, -1],
        "minutes_since_ath": minutes_filled[:, -1],
        "ath_age_hours": np.nan_to_num(m_last / 60, nan=0.0),
    }
    with np.errstate(invalid="ignore"):
        out["ath_is_recent"] = _flag(m_last < 60)
        out["ath_is_old"] = _flag(m_last > 1440)

    dev = _filled(grid, g(column("dev_sold_amount")))
    bp = _filled(grid, g(column("buy_pressure_ratio")))
    whale_buy = _filled(grid, g(column("whale_buy_volume_sol")))
    whale_sell = _filled(grid, g(column("whale_sell_volume_sol")))
    net = g(column("net_volume_sol"))
    volatility = g(column("volatility_pct"))
    signers = g(column("unique_signer_ratio"))
    mcap = g(column("market_cap_close"))
    out["dev_sold_flag"] = _flag(dev[:, -1] > 0)
    out["dev_sold_cumsum"] = np.nansum(dev, axis=1) + seed["dev"]
    out["whale_net_volume"] = whale_buy[:, -1] - whale_sell[:, -1]
    with np.errstate(invalid="ignore"):
        positive = _flag(net > 0)
    flip = np.abs(positive[:, -1] - positive[:, -2]) if grid.width > 1 else np.zeros(grid.coins)
    flip = np.where(grid.first_col < grid.width - 1, flip, np.nan)
    close_filled = _forward_fill(close)
    breakout_volume = breakout * volume
    # What is compared with a threshold is summed as the engine sums it (_threshold_sums):
    # [name, window, coin, newest or the row before].
    ties: dict[str, tuple[np.ndarray, _Distance]] = {
        "signers": (signers, lambda sums, means: np.abs(means[..., 1] - 0.15)),
        "volatility": (
            volatility,
            lambda sums, means: np.abs(volatility[:, -1] - 1.5 * means[..., 1]),
        ),
        "trend": (distance_filled, lambda sums, means: np.abs(means[..., 1] - means[..., 0])),
    }
    if (dev < 0).any():  # only a window with a negative sale sums dev (see the spike below)
        ties["dev"] = (dev, lambda sums, means: np.abs(sums[..., 1]))
    sums, counts = _threshold_sums(ties, windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    layer = {name: i for i, name in enumerate(ties)}
    at = {w: i for i, w in enumerate(windows)}

    # Summed or averaged over each window: all at once, one NumPy call per window.
    summed = np.stack(
        [bp, whale_buy, whale_sell, net, breakout, breakout_volume, minutes_filled, volume]
    )
    for w in windows:
        win = slice(max(grid.width - w, 0), None)
        total, mean, counts_w = _stacked_sums(summed[:, :, win])
        d = dev[:, win]
        spike = np.where(
            np.fmin.reduce(d, axis=1) >= 0,
            np.fmax.reduce(d, axis=1) > 0,
            sums[layer["dev"], at[w], :, 1] > 0 if "dev" in layer else False,
        )
        out[f"dev_sold_spike_{w}"] = _flag(spike)
        bp_ma = mean[0]
        out[f"buy_pressure_ma_{w}"] = bp_ma
        out[f"buy_pressure_trend_{w}"] = bp[:, -1] - bp_ma
        out[f"whale_activity_{w}"] = total[1] + total[2]
        vol_ma = _exact_mean(volatility[:, win], means[layer["volatility"], at[w], :, 1])
        out[f"volatility_ma_{w}"] = vol_ma
        mean_volume = _exact_mean(volume[:, win], mean[7])
        std_volume = _exact_std(volume[:, win], (counts_w[7], mean[7]))
        trend = _exact_mean(distance_filled[:, win], means[layer["trend"], at[w], :, 1])
        before = slice(max(grid.width - w - 1, 0), grid.width - 1)
        trend_before = (
            _exact_mean(distance_filled[:, before], means[layer["trend"], at[w], :, 0])
            if grid.width > 1
            else np.nan
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"volatility_spike_{w}"] = _flag(volatility[:, -1] > 1.5 * vol_ma)
            signer_mean = _exact_mean(signers[:, win], means[layer["signers"], at[w], :, 1])
            out[f"wash_trading_flag_{w}"] = _flag(signer_mean < 0.15)
            out[f"net_volume_ma_{w}"] = mean[3]
            out[f"volume_flip_{w}"] = flip
            old_filled = _at(close_filled, grid, w)
            out[f"price_change_{w}"] = (close_filled[:, -1] / old_filled - 1) * 100
            old_close = _at(close, grid, w)
            out[f"price_roc_{w}"] = np.where(
                old_close != 0, (close[:, -1] - old_close) / old_close * 100, np.nan
            )
            out[f"volume_ratio_{w}"] = np.where(
                mean_volume != 0, volume[:, -1] / mean_volume, np.nan
            )
            out[f"volume_spike_{w}"] = np.where(
                std_volume != 0, (volume[:, -1] - mean_volume) / std_volume, np.nan
            )
            old_mcap = _at(mcap, grid, w)
            out[f"mcap_velocity_{w}"] = np.where(
                old_mcap != 0, (mcap[:, -1] - old_mcap) / old_mcap * 100, np.nan
            )
            out[f"ath_distance_trend_{w}"] = trend
            # The row before the newest exists only when the coin has two loaded rows.
            has_before = grid.first_col < grid.width - 1
            out[f"ath_approach_{w}"] = _flag(has_before & (trend - trend_before < 0))
        out[f"ath_breakout_count_{w}"] = total[4]
        out[f"ath_breakout_volume_ma_{w}"] = mean[5]
        out[f"ath_age_trend_{w}"] = mean[6]

    age = since_first[:, -1]
    with np.errstate(invalid="ignore"):  # one comparison for every flag (~90 of them)
        flagged = _flag(age[:, None] >= _flag_windows(tuple(flags))[None, :])
    for i, name in enumerate(flags):
        out[name] = flagged[:, i]
    return out


@functools.lru_cache(maxsize=64)
def _flag_windows(flags: tuple[str, ...]) -> np.ndarray:
    """The age in minutes each `_has_data` flag needs (cached: parsed per batch before)."""
    windows = np.array([_has_data_window(name) for name in flags], dtype=np.float64)
    windows.flags.writeable = False
    return windows
