"""What the web layer may use of the running system, and nothing more.

`web` imports `actors` only through this module (an import-linter contract in
pyproject.toml). The services a request handler can reach are Protocols here, set
as typed fields of `web.context.AppContext` by the composition root
(`actors.app.service`); the other names are the few facts and policies the
running system publishes for the API: its live state, its metrics catalogue, and
the webhook rules the API checks a configuration against so that it refuses what
the dispatcher would refuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from actors.errors import ManualPredictError
from actors.runtime import metrics
from actors.runtime.state import ServiceState
from actors.webhooks.retry import shown_error
from actors.webhooks.targets import TargetPolicy, policy_from

__all__ = [
    "LeaseHolder",
    "ManualPredictError",
    "ManualPredictions",
    "ManualResult",
    "ModelReload",
    "Poke",
    "RunningActors",
    "ServiceState",
    "TargetPolicy",
    "WorkerMetrics",
    "Workers",
    "metrics",
    "policy_from",
    "shown_error",
]


@dataclass(frozen=True, slots=True)
class ManualResult:
    """One model's answer to a prediction on request (`POST /api/predict`)."""

    active_model_id: int
    model_name: str
    coin_id: str
    data_timestamp: datetime
    probability: float | None
    prediction: int | None
    tag: str | None
    prediction_id: int | None
    stored: bool  # False: this tick was already predicted by the model
    skipped: str | None


class ManualPredictions(Protocol):
    """Predicts one coin now with the running models, stored and sent like the stream's."""

    async def predict(
        self, coin_id: str, model_ids: Sequence[int] | None, timestamp: datetime | None
    ) -> list[ManualResult]: ...


class ModelReload(Protocol):
    """Brings the running predictors in step with the database now (model sync)."""

    async def sync(self) -> None: ...


class RunningActors(Protocol):
    """The names of the actors running now (the supervisor)."""

    @property
    def actor_names(self) -> list[str]: ...


class LeaseHolder(Protocol):
    """This process as the holder of leases among replicas (coin shards, a role)."""

    @property
    def holder(self) -> str: ...


class Workers(Protocol):
    """`serve --workers N`: the worker processes under this supervisor process."""

    @property
    def count(self) -> int: ...

    @property
    def down_since(self) -> Mapping[int, float]: ...

    @property
    def running(self) -> int: ...


# Wakes an actor that otherwise waits for its next poll (webhook dispatcher, backtests).
Poke = Callable[[], None]
# Each running worker's /metrics text, by worker index.
WorkerMetrics = Callable[[], Awaitable[list[tuple[str, str]]]]
