"""Messages between actors: small frozen dataclasses, aware UTC times, int ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

    from actors.scoring.batch_writer import ModelScores
    from actors.scoring.shared_features import SharedFeatures
    from actors.webhooks.payload import WebhookItem


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


@dataclass(frozen=True, slots=True)
class Batch:
    """Batcher -> every predictor: the latest tick per coin plus their history.

    `history` holds, per coin, the newest rows at or before that coin's tick
    (FEATURE_HISTORY_SIZE of them) with the base columns of coin_metrics.
    `prefix` holds the running state of each coin before its first loaded row
    (see features/), one row per (mint, phase_key): phase_key is "all" or the
    sorted phase ids of a model joined by "," — a model with phases sees only
    rows of its phases, so its running state is computed over those alone.
    The same immutable frames go to every predictor. A predictor calls
    `completion.ack(key)` once its work for the batch is done (also when the
    batch had nothing for it), handing over its scores; the batcher then stores
    every model's predictions with the batch's webhook jobs, and advances the
    durable intake cursor to `max_row_id` once they are committed.
    """

    batch_id: int
    ticks: tuple[Tick, ...]
    history: pl.DataFrame
    prefix: pl.DataFrame
    created_at: float  # time.time() at flush
    max_row_id: int
    completion: BatchCompletion
    features: SharedFeatures  # computed once per (feature key, phase key), shared


class BatchCompletion:
    """Which predictors still owe an acknowledgement for one batch."""

    __slots__ = ("_done", "_pending", "expected", "scores", "webhook_items")

    def __init__(self, expected: set[int]) -> None:
        import anyio

        self.expected = frozenset(expected)
        self._pending = set(expected)
        # What the predictors scored, for the batcher to store (actors.scoring.batch_writer), and
        # the webhook items of what models with caps or ignore windows stored themselves;
        # the batcher queues the items, one job per URL and coin tick, with the predictions.
        self.scores: list[ModelScores] = []
        self.webhook_items: list[WebhookItem] = []
        self._done = anyio.Event()
        if not self._pending:
            self._done.set()

    def ack(self, key: int) -> None:
        """Predictor `key` is done with the batch (or went away)."""
        self._pending.discard(key)
        if not self._pending:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()


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
