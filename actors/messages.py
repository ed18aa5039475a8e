"""Messages between actors: small frozen dataclasses, aware UTC times, int ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True, slots=True)
class Wakeup:
    """Listener -> poller: "read now". Carries no data: the table is the truth."""

    reason: str  # "notify" | "reconnect" | "startup"


@dataclass(frozen=True, slots=True)
class Tick:
    """One new coin_metrics row, as the poller saw it."""

    row_id: int
    coin_id: str  # coin_metrics.mint
    data_timestamp: datetime  # coin_metrics.timestamp (aware UTC)
    phase_id: int | None
    seen_at: float  # time.time() when the poller read it


@dataclass(frozen=True, slots=True)
class TickPage:
    """Poller -> batcher: ticks in coin_metrics id order."""

    ticks: tuple[Tick, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """Batcher -> every predictor: the latest tick per coin plus their history.

    `history` holds, per coin, the newest rows at or before that coin's tick
    (FEATURE_HISTORY_SIZE of them) with the base columns of coin_metrics;
    `prefix` holds the running state of each coin before its first loaded row
    (see features/), so running features equal their value over all history.
    The same immutable frames go to every predictor.
    """

    batch_id: int
    ticks: tuple[Tick, ...]
    history: pl.DataFrame
    prefix: pl.DataFrame
    created_at: float  # time.time() at flush


@dataclass(frozen=True, slots=True)
class ModelsChanged:
    """NOTIFY on our models channel -> model sync: re-read active models."""

    active_model_id: int | None
    action: str
