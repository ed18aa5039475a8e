"""The batch the batcher hands to every predictor, and who still owes it an answer.

Scoring's own messages: they carry scoring's types (shared features, model scores,
webhook items), so they live here rather than in `actors.runtime.messages`, which
holds only what every package may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

    from actors.runtime.messages import Tick
    from actors.scoring.batch_writer import ModelScores
    from actors.scoring.shared_features import SharedFeatures
    from actors.webhooks.payload import WebhookItem


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
