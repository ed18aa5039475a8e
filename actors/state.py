"""Live facts the actors publish and `/health` and the status page read.

A plain object shared on the one event loop: no locks needed, and nothing here
is the truth about data (the database is); it only says how the service feels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class ServiceState:
    started_monotonic: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    listener_up: bool = False
    last_notification_at: float | None = None
    last_poll_at: float | None = None
    # Now minus the newest data timestamp that reached the batcher, at that moment.
    intake_lag_seconds: float | None = None
    last_tick_at: float | None = None
    demo: bool = False
    draining: bool = False
    actors_up: dict[str, bool] = field(default_factory=dict)
    actor_restarts: dict[str, int] = field(default_factory=dict)
    # Coin ticks the database refused to store for good, skipped so the pipeline goes on
    # (the batcher's store and a self-storing predictor's), and the last of them: coin,
    # time, models, the database's error.
    ticks_store_failed: int = 0
    last_store_failure: str | None = None

    def store_refused(
        self, coin_id: str, data_timestamp: datetime, models: list[int], error: str
    ) -> None:
        """A coin tick the database refused for good was skipped (for /health and /stats)."""
        self.ticks_store_failed += 1
        self.last_store_failure = (
            f"{coin_id} at {data_timestamp.isoformat()} models {models}: {error}"
        )

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic
