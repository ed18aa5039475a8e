"""Messages between actors: small frozen dataclasses, aware UTC times, int ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


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
    """Poller -> batcher: ticks in coin_metrics id order, and the highest id the page
    read (rows the poller skipped included, so the cursor can move past them too)."""

    ticks: tuple[Tick, ...]
    last_row_id: int = 0
    # With coin shards: the shards (-> lease generation) whose every row up to
    # last_row_id the poller has emitted by now; None without shards.
    covered: Mapping[int, int] | None = None


def phase_key(phases: tuple[int, ...] | list[int] | None) -> str:
    """The key of a model's phase filter in `Batch.prefix` ("all" without one)."""
    if not phases:
        return "all"
    return ",".join(str(p) for p in sorted(set(phases)))


@dataclass(frozen=True, slots=True)
class ModelsChanged:
    """NOTIFY on our models channel -> model sync: re-read active models."""

    active_model_id: int | None
    action: str
