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
    # Per actor: since when it runs without a crash, and since when it has been failing
    # (down, or crashing again soon after each restart); see `actor_failing_for`.
    actor_up_since: dict[str, float] = field(default_factory=dict)
    actor_failing_since: dict[str, float] = field(default_factory=dict)
    # Per periodic actor (evaluator, retention): its sweeps that failed in a row.
    sweeps_failed_in_a_row: dict[str, int] = field(default_factory=dict)
    # Coin ticks the database refused to store for good, skipped so the pipeline goes on
    # (the batcher's store and a self-storing predictor's), and the last of them: coin,
    # time, models, the database's error.
    ticks_store_failed: int = 0
    last_store_failure: str | None = None
    # coin_metrics rows intake could not use, by reason, and the last of them.
    ticks_skipped: dict[str, int] = field(default_factory=dict)
    last_tick_skipped: str | None = None

    def store_refused(
        self, coin_id: str, data_timestamp: datetime, models: list[int], error: str
    ) -> None:
        """A coin tick the database refused for good was skipped (for /health and /stats)."""
        self.ticks_store_failed += 1
        self.last_store_failure = (
            f"{coin_id} at {data_timestamp.isoformat()} models {models}: {error}"
        )

    def tick_skipped(
        self, row_id: int, coin_id: str | None, timestamp: str | None, reason: str
    ) -> None:
        """A coin_metrics row intake could not use (for /health)."""
        self.ticks_skipped[reason] = self.ticks_skipped.get(reason, 0) + 1
        self.last_tick_skipped = f"row {row_id} of {coin_id} at {timestamp}: {reason}"

    def actor_changed(self, name: str, up: bool) -> None:
        """The supervisor started an actor (up) or saw it end (down)."""
        now = time.monotonic()
        self.actors_up[name] = up
        if up:
            self.actor_up_since[name] = now
        else:
            self.actor_up_since.pop(name, None)
            self.actor_failing_since.setdefault(name, now)

    def actor_failing_for(self, name: str, grace: float) -> float | None:
        """Seconds the actor has been failing, or None when it is fine.

        A crash-looping actor is up for moments between restarts, so "down right now"
        would flicker: it counts as failing from its first crash until it has stayed
        up for `grace` seconds.
        """
        since = self.actor_failing_since.get(name)
        if since is None:
            return None
        now = time.monotonic()
        up_since = self.actor_up_since.get(name)
        if up_since is not None and now - up_since >= grace:
            del self.actor_failing_since[name]
            return None
        return now - since

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic
