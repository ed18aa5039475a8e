"""Running state of a coin before a window of rows ("prefix state").

At serving time only the newest rows of a coin are loaded, but the running
features (rolling_ath, ath_breakout, minutes_since_ath and what is built on
them, dev_sold_cumsum, the coin age behind `_has_data`) must equal their value
over *all* the coin's rows up to the tick, as in training. The prefix state
carries exactly what those need from the rows before the window; `compute`
takes it as `seed`.

Fields, per coin (`mint`), over the rows strictly before the window:
- `prefix_rows`: how many rows (0 when the window starts at the coin's first row).
- `prefix_max_high`: max(price_high), NULL when none or all NULL.
- `prefix_last_ath`: the running max at the last prefix row — equal to
  prefix_max_high, except NULL when that row's price_high is NULL (pandas'
  cummax leaves NULL there, so the first window row cannot break out).
- `prefix_dev_sum`: sum(coalesce(dev_sold_amount, 0)).
- `first_timestamp`: the coin's first timestamp (NULL when prefix_rows is 0).
- `prefix_last_breakout`: timestamp of the latest ATH breakout in the prefix,
  NULL when there was none. A breakout is a row whose price_high exceeds the
  running max of the rows before it; so the latest one is the first row that
  reached prefix_max_high, provided the row before it had a non-NULL running
  max (never the coin's first row).
- `phase_key`: optional; "all" or a model's phase ids (see actors.runtime.messages).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import polars as pl

from features.columns import PREFIX_SCHEMA, UTC_TIME
from features.engineering import ath_block

# The coin_metrics columns `prefix_state` reads (price_close only because the shared
# ATH block computes a distance from it).
PREFIX_INPUT_COLUMNS: tuple[str, ...] = (
    "mint",
    "timestamp",
    "phase_id_at_time",
    "price_high",
    "price_close",
    "dev_sold_amount",
)


def empty_prefix(*, with_phase_key: bool = False) -> pl.DataFrame:
    schema = dict(PREFIX_SCHEMA)
    if with_phase_key:
        schema["phase_key"] = pl.String()
    return pl.DataFrame(schema=schema)


def prefix_state(rows: pl.DataFrame, seed: pl.DataFrame | None = None) -> pl.DataFrame:
    """The prefix state after `rows` (per coin), continuing from `seed` when given.

    With it a caller can keep a per-coin cache: the state at an old window start
    plus the rows that have since left the window gives the state at the new one.
    Coins of `seed` without rows are carried over unchanged.
    """
    if rows.is_empty():
        return (seed if seed is not None else empty_prefix()).select(list(PREFIX_SCHEMA))
    frame = ath_block(rows, seed)
    dev = (
        pl.col("dev_sold_amount").fill_null(0.0)
        if "dev_sold_amount" in frame.columns
        else pl.lit(0.0)
    )
    state = (
        frame.group_by("mint", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("_rows"),
            pl.col("price_high").max().alias("_max_high"),
            pl.col("rolling_ath").last().alias("prefix_last_ath"),
            dev.sum().alias("_dev"),
            pl.col("timestamp").first().alias("_first_ts"),
            pl.col("timestamp").filter(pl.col("ath_breakout") == 1).last().alias("_last_bo"),
            pl.col("_seed_rows").first(),
            pl.col("_seed_max").first(),
            pl.col("_seed_dev").first(),
            pl.col("_seed_first").first(),
            pl.col("_seed_last_bo").first(),
        )
        .select(
            "mint",
            (pl.col("_seed_rows") + pl.col("_rows")).alias("prefix_rows"),
            pl.max_horizontal("_seed_max", "_max_high").alias("prefix_max_high"),
            "prefix_last_ath",
            (pl.col("_seed_dev") + pl.col("_dev")).alias("prefix_dev_sum"),
            pl.coalesce("_seed_first", "_first_ts").alias("first_timestamp"),
            pl.coalesce("_last_bo", "_seed_last_bo").alias("prefix_last_breakout"),
        )
    )
    if seed is not None and not seed.is_empty():
        untouched = seed.select(list(PREFIX_SCHEMA)).join(
            state.select("mint"), on="mint", how="anti"
        )
        state = pl.concat([state, untouched], how="vertical_relaxed")
    return state.cast(PREFIX_SCHEMA)  # type: ignore[arg-type]


class CoinPrefix(NamedTuple):
    """One coin's prefix state (the fields above; times as microseconds since the epoch,
    None where the frame has NULL)."""

    rows: int
    max_high: float | None
    last_ath: float | None
    dev_sum: float
    first_us: int | None
    last_breakout_us: int | None


NEUTRAL = CoinPrefix(0, None, None, 0.0, None, None)


def advance_prefix(
    state: CoinPrefix, times_us: Sequence[int], highs: Sequence[float], devs: Sequence[float]
) -> CoinPrefix:
    """`state` after one coin's next rows (in time order; NaN stands for NULL).

    The per-coin twin of `prefix_state(rows, seed)` for the few rows that leave a
    window between two batches: a loop over them costs microseconds where the
    frame version costs milliseconds of Polars calls per batch.
    """
    if not times_us:
        return state
    rows, max_high, last_ath, dev_sum, first_us, last_bo = state
    dev_rows = 0.0
    for at, high, dev in zip(times_us, highs, devs, strict=True):
        if math.isnan(high):
            last_ath = None  # pandas' cummax leaves NULL here: the next row cannot break out
        else:
            if last_ath is not None and high > last_ath:
                last_bo = at
            if max_high is None or high > max_high:
                max_high = high
            last_ath = max_high
        if not math.isnan(dev):
            dev_rows += dev
    return CoinPrefix(
        rows + len(times_us),
        max_high,
        last_ath,
        dev_sum + dev_rows,
        times_us[0] if first_us is None else first_us,
        last_bo,
    )


def coin_prefixes(states: pl.DataFrame) -> dict[str, CoinPrefix]:
    """A `prefix_state` frame as one `CoinPrefix` per coin."""
    columns = states.select(
        "mint",
        "prefix_rows",
        "prefix_max_high",
        "prefix_last_ath",
        "prefix_dev_sum",
        pl.col("first_timestamp").cast(pl.Int64),
        pl.col("prefix_last_breakout").cast(pl.Int64),
    )
    return {row[0]: CoinPrefix(*row[1:]) for row in columns.iter_rows()}


def prefix_frame(mints: Sequence[str], states: Sequence[CoinPrefix]) -> pl.DataFrame:
    """`CoinPrefix` values as a frame of PREFIX_SCHEMA (the inverse of `coin_prefixes`)."""
    fields = list(zip(*states, strict=True)) if states else [()] * len(CoinPrefix._fields)
    return pl.DataFrame(
        {
            "mint": pl.Series(mints, dtype=pl.String),
            "prefix_rows": pl.Series(fields[0], dtype=pl.Int64),
            "prefix_max_high": pl.Series(fields[1], dtype=pl.Float64),
            "prefix_last_ath": pl.Series(fields[2], dtype=pl.Float64),
            "prefix_dev_sum": pl.Series(fields[3], dtype=pl.Float64),
            "first_timestamp": pl.Series(fields[4], dtype=pl.Int64).cast(UTC_TIME),
            "prefix_last_breakout": pl.Series(fields[5], dtype=pl.Int64).cast(UTC_TIME),
        }
    )
