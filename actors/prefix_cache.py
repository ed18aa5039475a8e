"""Running per-coin state before each coin's history window, carried between batches.

Running features must equal their value over *all* of a coin's rows up to the
tick (FEATURES.md), but a batch loads only the newest rows of each coin.
Re-reading a coin's whole history at every tick would cost O(age) per tick, so
the state before the window ("prefix", see `features.running`) is kept here:
built from the database once, when a coin is first seen (or its window jumped
past what we hold), and afterwards rolled forward from the rows that left the
window, which the previous batch already loaded. Everything is vectorised over
the coins of a batch: no Python loop per coin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime

import polars as pl

from actors.window_store import WindowStore
from features.columns import UTC_TIME, history_schema
from features.running import PREFIX_INPUT_COLUMNS, PREFIX_SCHEMA, empty_prefix, prefix_state

_WINDOW_SCHEMA = history_schema(PREFIX_INPUT_COLUMNS)
_META_SCHEMA: dict[str, pl.DataType] = {"mint": pl.String(), "boundary": UTC_TIME, "last": UTC_TIME}

# Loads, per coin, every row strictly before its boundary (PREFIX_INPUT_COLUMNS at least).
RowsBefore = Callable[[Sequence[str], Sequence[datetime]], Awaitable[pl.DataFrame]]


def phase_filter(key: str) -> pl.Expr | None:
    """Rows a model with this phase key sees (None: all rows)."""
    if key == "all":
        return None
    return pl.col("phase_id_at_time").is_in([int(p) for p in key.split(",")])


def _filtered(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    expr = phase_filter(key)
    return frame if expr is None else frame.filter(expr)


def _neutral(mints: pl.Series) -> pl.DataFrame:
    """The state of a coin with no rows before its window."""
    return pl.DataFrame({"mint": mints}).with_columns(
        pl.lit(0, pl.Int64).alias("prefix_rows"),
        pl.lit(None, pl.Float64).alias("prefix_max_high"),
        pl.lit(None, pl.Float64).alias("prefix_last_ath"),
        pl.lit(0.0, pl.Float64).alias("prefix_dev_sum"),
        pl.lit(None, UTC_TIME).alias("first_timestamp"),
        pl.lit(None, UTC_TIME).alias("prefix_last_breakout"),
    )


def _complete(states: pl.DataFrame, mints: pl.Series) -> pl.DataFrame:
    """`states` plus a neutral row for every coin of `mints` it lacks."""
    states = states.select(list(PREFIX_SCHEMA)).cast(PREFIX_SCHEMA)  # type: ignore[arg-type]
    missing = pl.DataFrame({"mint": mints}).join(states.select("mint"), on="mint", how="anti")
    if missing.is_empty():
        return states
    return pl.concat([states, _neutral(missing["mint"])], how="vertical")


def _replace(store: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """`store` with the coins of `new` replaced by `new`'s rows."""
    kept = store.join(new.select("mint").unique(), on="mint", how="anti")
    return pl.concat([kept, new.select(store.columns)], how="vertical")


class PrefixCache:
    def __init__(self, rows_before: RowsBefore, *, max_coins: int = 50_000) -> None:
        self._rows_before = rows_before
        self._max_coins = max_coins
        self._windows = WindowStore()  # each coin's window of the previous batch
        self._meta = pl.DataFrame(schema=_META_SCHEMA)
        self._states: dict[str, pl.DataFrame] = {}

    async def prefix_for(
        self, history: pl.DataFrame, keys: Iterable[str], window_rows: int | None = None
    ) -> pl.DataFrame:
        """The prefix state of every coin of `history` for each phase key, with `phase_key`.

        `window_rows`: how many rows per coin `history` was asked for. A coin with fewer
        has no rows before its window (all its rows up to the tick were loaded), so
        its state is neutral without asking the database.
        """
        keys = sorted(set(keys))
        if history.is_empty() or not keys:
            return empty_prefix(with_phase_key=True)
        window = history.select(PREFIX_INPUT_COLUMNS).cast(_WINDOW_SCHEMA)  # type: ignore[arg-type]
        meta = window.group_by("mint").agg(
            pl.col("timestamp").min().alias("boundary"),
            pl.col("timestamp").max().alias("last"),
            pl.len().alias("_rows"),
        )
        joined = meta.join(self._meta, on="mint", how="left", suffix="_old")
        same = joined.filter(pl.col("boundary") == pl.col("boundary_old"))["mint"]
        forward = joined.filter(
            (pl.col("boundary_old") < pl.col("boundary"))
            & (pl.col("boundary") <= pl.col("last_old"))
        )
        known = pl.concat([same, forward["mint"]])
        # Coins whose state must come from the database, for any key.
        misses = set(meta["mint"].to_list()) - set(known.to_list())
        for key in keys:
            held = self._states.get(key)
            have = set() if held is None else set(held["mint"].to_list())
            misses |= set(known.to_list()) - have
        wanted = meta.filter(pl.col("mint").is_in(list(misses)))
        if window_rows is not None:
            wanted = wanted.filter(pl.col("_rows") >= window_rows)
        loaded = await self._load(wanted)

        # Rows that left each rolled-forward coin's window since the previous batch.
        rolling = forward.filter(~pl.col("mint").is_in(list(misses)))
        previous = self._windows.rows_of(rolling["mint"].to_list())
        left = (
            (pl.DataFrame(schema=_WINDOW_SCHEMA) if previous is None else previous)
            .join(rolling.select("mint", "boundary"), on="mint")
            .filter(pl.col("timestamp") < pl.col("boundary"))
        )
        parts = []
        for key in keys:
            held = self._states.get(key, empty_prefix())
            reused = held.filter(
                pl.col("mint").is_in(same.to_list()) & ~pl.col("mint").is_in(list(misses))
            )
            seed = held.filter(pl.col("mint").is_in(rolling["mint"].to_list()))
            rolled = prefix_state(_filtered(left, key), seed=seed) if seed.height else None
            fresh = _complete(
                prefix_state(_filtered(loaded, key)), pl.Series("mint", sorted(misses), pl.String)
            )
            found = [s for s in (reused, rolled, fresh) if s is not None and s.height]
            states = pl.concat(found, how="vertical_relaxed") if found else empty_prefix()
            states = _complete(states, meta["mint"])
            self._states[key] = _replace(held, states) if held.height else states
            parts.append(states.with_columns(pl.lit(key).alias("phase_key")))
        self._windows.put(window)
        self._meta = _replace(self._meta, meta.drop("_rows"))
        self._evict()
        return pl.concat(parts, how="vertical")

    async def _load(self, meta: pl.DataFrame) -> pl.DataFrame:
        if meta.is_empty():
            return pl.DataFrame(schema=_WINDOW_SCHEMA)
        rows = await self._rows_before(meta["mint"].to_list(), meta["boundary"].to_list())
        return rows.select(PREFIX_INPUT_COLUMNS).cast(_WINDOW_SCHEMA)  # type: ignore[arg-type]

    def _evict(self) -> None:
        """Forget the coins seen longest ago (finished coins stop trading)."""
        if self._meta.height <= self._max_coins:
            return
        keep = self._meta.sort("last", descending=True).head(self._max_coins)
        gone = self._meta.join(keep.select("mint"), on="mint", how="anti")["mint"].to_list()
        self._meta = keep
        self._windows.forget(gone)
        self._states = {
            k: v.join(keep.select("mint"), on="mint", how="semi") for k, v in self._states.items()
        }
