"""Features computed once per batch and shared by every predictor that needs them.

Models with the same windows and phase filter get the same feature frame (a
superset of each one's features), so ten models cost one computation per
batch instead of ten. The first predictor to ask computes it in a worker
thread; the others wait for that result instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import polars as pl

from actors.runtime.messages import Tick
from actors.runtime.offload import run_cpu
from actors.scoring.prefix_cache import phase_rows
from features.columns import UTC_TIME
from features.matrix import FeatureSpec, TickRows


@dataclass(slots=True)
class _Entry:
    done: anyio.Event = field(default_factory=anyio.Event)
    rows: TickRows | None = None
    error: BaseException | None = None


class SharedFeatures:
    """One per batch: computed feature frames keyed by (feature key, phase key)."""

    def __init__(
        self, history: pl.DataFrame, prefix: pl.DataFrame, ticks: pl.DataFrame | None = None
    ) -> None:
        self.history = history
        self.prefix = prefix
        self.ticks = ticks
        self._entries: dict[Hashable, _Entry] = {}

    async def get(self, spec: FeatureSpec, phase_key: str) -> TickRows:
        key = (spec.shared_key, phase_key)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            try:
                coins = self.ticks.height if self.ticks is not None else self.history.height
                entry.rows = await run_cpu(
                    coins, rows_for, spec, self.history, self.prefix, phase_key, self.ticks
                )
            except BaseException as exc:
                # Waiting predictors see the same error; a later batch computes afresh.
                entry.error = exc
                raise
            finally:
                entry.done.set()
        else:
            await entry.done.wait()
        if entry.error is not None:
            raise RuntimeError(f"shared feature computation failed: {entry.error!r}")
        assert entry.rows is not None
        return entry.rows


def rows_for(
    spec: FeatureSpec,
    history: pl.DataFrame,
    prefix: pl.DataFrame,
    phase_key: str,
    ticks: pl.DataFrame | None = None,
) -> TickRows:
    """The feature rows of the ticks, indexed by (mint, timestamp). Blocking.

    A tick is normally its coin's newest loaded row (history is read up to it):
    then only that row is computed (`features.last_row`). Any other tick falls
    back to computing the whole window with Polars.
    """
    own, seed = _inputs(history, prefix, phase_key)
    if ticks is not None:
        last = TickRows.from_last(spec.compute_shared_last(own, seed=seed))
        coins = {mint for mint, _ in last.index}
        wanted = zip(ticks["mint"].to_list(), ticks["timestamp"].to_list(), strict=True)
        if all(key in last.index or key[0] not in coins for key in wanted):
            return last
    return TickRows.from_frame(_computed(spec, own, seed, ticks))


def tick_frame(ticks: Sequence[Tick]) -> pl.DataFrame:
    """(mint, timestamp) of ticks, typed like the feature frames. The times go in as
    microseconds: Polars converting datetime objects cost ~0.1 ms per 20-tick batch."""
    micros = [_micros(t.data_timestamp) for t in ticks]
    return pl.DataFrame(
        [
            pl.Series("mint", [t.coin_id for t in ticks], dtype=pl.String),
            pl.Series("timestamp", micros, dtype=pl.Int64).cast(UTC_TIME),
        ]
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch (a time without a zone is UTC, as Polars reads it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def compute_for(
    spec: FeatureSpec,
    history: pl.DataFrame,
    prefix: pl.DataFrame,
    phase_key: str,
    ticks: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The shared frame of a model's key: phase-filtered history, its prefix state. Blocking.

    With `ticks`, only the rows at those (mint, timestamp) are kept: the only rows a
    model reads, so each model's matrix is built from a few rows, not the history.
    """
    own, seed = _inputs(history, prefix, phase_key)
    return _computed(spec, own, seed, ticks)


def _computed(
    spec: FeatureSpec, own: pl.DataFrame, seed: pl.DataFrame | None, ticks: pl.DataFrame | None
) -> pl.DataFrame:
    computed = spec.compute_shared(own, seed=seed)
    if ticks is None:
        return computed
    return computed.join(ticks, on=["mint", "timestamp"], how="semi")


def _inputs(
    history: pl.DataFrame, prefix: pl.DataFrame, phase_key: str
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The rows a model with this phase key sees, and their prefix state."""
    own = phase_rows(history, phase_key)
    seed = None
    if "phase_key" in prefix.columns and prefix.height:
        # Column picks and a mask of Series, not frame expressions: each of those cost a
        # fixed ~0.05 ms per batch (issue 23). Usually every row is of this one key.
        columns = [c for c in prefix.columns if c != "phase_key"]
        keys = prefix.get_column("phase_key")
        if keys.null_count() == 0 and keys.to_list().count(phase_key) == prefix.height:
            seed = prefix[columns]
        else:
            seed = prefix[columns].filter(keys == phase_key)
    return own, seed
