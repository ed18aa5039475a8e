"""What every request handler can reach: settings, the pool, live state, and the
running system's services as typed ports (actors/ports.py).

A service is None where the wiring has none (an app built by a test, a supervisor
process without intake); handlers that need one answer 503 or skip what it adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from actors.ports import (
    LeaseHolder,
    ManualPredictions,
    ModelReload,
    Poke,
    RunningActors,
    ServiceState,
    WorkerMetrics,
    Workers,
)
from storage.clients.training_service import TrainingServiceClient
from storage.config import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    state: ServiceState = field(default_factory=ServiceState)
    manual_predictions: ManualPredictions | None = None
    model_sync: ModelReload | None = None
    actors: RunningActors | None = None
    shards: LeaseHolder | None = None  # None: this process reads no coin shards
    housekeeping: LeaseHolder | None = None  # this process's lease of the housekeeping role
    workers: Workers | None = None  # serve --workers N, in the supervisor process
    worker_metrics: WorkerMetrics | None = None
    webhooks_poke: Poke | None = None
    backtests_poke: Poke | None = None
    # A Training Service client to share (demo mode's stand-in); otherwise each
    # request opens (and closes) its own from the settings.
    training_service: TrainingServiceClient | None = None


CONTEXT = web.AppKey("context", AppContext)


def ctx(request: web.Request) -> AppContext:
    return request.app[CONTEXT]
