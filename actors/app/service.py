"""Wiring: database, pool, streams, actors, supervisor. One `Service` per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.app.dashboard_process import DashboardProcess
from actors.app.demo import DemoRunner, retire_demo_models
from actors.app.web_server import WebServer
from actors.app.worker_pool import WorkerPool
from actors.backtest.runner import BacktestRunner
from actors.housekeeping.evaluator import Evaluator
from actors.housekeeping.retention import Retention
from actors.intake.listener import Listener, wake
from actors.intake.poller import Poller
from actors.runtime.messages import TickPage, Wakeup
from actors.runtime.state import ServiceState
from actors.runtime.supervisor import (
    STAGE_BACKGROUND,
    STAGE_BATCH,
    STAGE_INTAKE,
    STAGE_LEASES,
    STAGE_OUTPUT,
    STAGE_ROLES,
    STAGE_WEB,
    ActorSpec,
    Supervisor,
)
from actors.scoring.batch_bus import BatchBus
from actors.scoring.batcher import Batcher
from actors.scoring.manual_predict import ManualPredictor
from actors.scoring.model_runtime import ModelRuntime
from actors.scoring.model_sync import ModelSync
from actors.scoring.predictor import Predictor
from actors.shards.lease import ShardLeases
from actors.shards.role_lease import RoleLease
from actors.shards.shard_set import ShardSet
from actors.webhooks.dispatcher import Handoff, UnsentJobs, WebhookDispatcher, poker
from storage.config import Settings
from storage.db.database import Database, migrate, open_pool
from storage.intake.role_leases import HOUSEKEEPING
from storage.intake.shard_leases import ShardCountMismatch, configure
from storage.models.model_import import client_from_settings, reload_model
from storage.refusals import StartupRefused, database_refusal
from web.app import create_app
from web.context import AppContext

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ServiceOptions:
    dashboard: bool = False
    demo: bool = False
    # "all": this process does everything (one process, the default). "supervisor":
    # API, dashboard, evaluator, retention and `workers` worker processes; "worker":
    # intake, predictions and webhooks of the shards it leases (actors/app/worker_pool.py).
    role: str = "all"
    workers: int = 1


@dataclass(slots=True)
class Service:
    settings: Settings
    options: ServiceOptions = field(default_factory=ServiceOptions)
    state: ServiceState = field(default_factory=ServiceState)
    supervisor: Supervisor = field(init=False)
    database: Database | None = None
    pool: asyncpg.Pool | None = None
    app_context: AppContext | None = None
    bus: BatchBus = field(default_factory=BatchBus)
    shards: ShardSet | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.state)
        self.state.demo = self.options.demo

    @property
    def web_port(self) -> int | None:
        """The bound API port (useful when configured as 0 in tests)."""
        if "web" not in self.supervisor.actor_names:
            return None
        server: WebServer = self.supervisor.actor("web")
        return server.bound_port

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        # Held before it starts: a stop during the embedded server's start stops it too.
        self.database = Database.from_settings(settings)
        try:
            await self.database.start()
            try:
                applied = await migrate(self.database.dsn, embedded=settings.embedded)
            except Exception as exc:
                refusal = database_refusal(self.database.dsn, exc) if settings.db_dsn else None
                if refusal is not None:
                    raise refusal from exc
                raise
            log.info("database_ready", embedded=settings.embedded, migrations_applied=applied)
            self.pool = await open_pool(settings, self.database.dsn)
            try:
                async with self.pool.acquire() as conn:
                    try:
                        count = await configure(conn, settings.shard_count)
                    except ShardCountMismatch as exc:
                        raise StartupRefused("SHARD_COUNT", str(exc)) from exc
                self.shards = ShardSet(count)
                if not self.options.demo and self.options.role != "worker":
                    await retire_demo_models(settings, self.pool)
                self.app_context = AppContext(settings=settings, pool=self.pool, state=self.state)
                await self.supervisor.run(self._actor_specs(), task_status=task_status)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.pool.close()
        finally:
            with anyio.CancelScope(shield=True):
                await self.database.close()

    async def shutdown(self) -> None:
        await self.supervisor.shutdown(self.settings.shutdown_deadline_seconds)

    def _actor_specs(self) -> list[ActorSpec]:
        assert self.app_context is not None
        context = self.app_context
        settings = self.settings
        specs: list[ActorSpec] = []
        pool = self.pool
        assert pool is not None
        assert self.database is not None
        dsn = self.database.dsn
        supervisor, state, bus, shards = self.supervisor, self.state, self.bus, self.shards
        assert shards is not None
        # The batcher hands a batch's webhook jobs to the running dispatcher (whichever
        # instance), leased in its storing transaction, and pokes it for the ones it had
        # no room for (whole ticks: claimed at once); predictors poke it for manual
        # predictions (one job per model: claimed after a short coalescing window).
        poke = poker(supervisor)
        context.webhooks_poke = poke
        context.actors = supervisor
        # Streams outlive the actors at their ends, so a restarted actor picks them up.
        wake_send, wake_receive = anyio.create_memory_object_stream[Wakeup](1)
        page_send, page_receive = anyio.create_memory_object_stream[TickPage](4)
        shards.on_change = lambda: wake(wake_send, "shards")
        role = self.options.role
        intake, extras = role != "supervisor", role != "worker"
        if intake:
            context.shards = shards

        def make_predictor(runtime: ModelRuntime) -> Predictor:
            return Predictor(
                runtime,
                bus,
                pool,
                default_webhook_url=settings.n8n_webhook_url or None,
                poke_webhooks=poke,
                state=self.state,
            )

        async def repair_file(active_model_id: int) -> None:
            shared = context.training_service
            if shared is not None:
                await reload_model(pool, settings, shared, active_model_id, notify_action=None)
                return
            async with client_from_settings(settings) as client:
                await reload_model(pool, settings, client, active_model_id, notify_action=None)

        model_sync = ModelSync(dsn, pool, supervisor, make_predictor, repair=repair_file)
        context.model_sync = model_sync
        context.manual_predictions = ManualPredictor(
            pool, model_sync, supervisor, settings.feature_history_size
        )
        batcher_starts = 0

        def make_batcher() -> Batcher:
            nonlocal batcher_starts
            batcher_starts += 1
            if batcher_starts > 1 and "poller" in supervisor.actor_names:
                supervisor.actor("poller").rewind()
            return Batcher.from_settings(
                settings,
                pool,
                page_receive,
                bus,
                state,
                on_jobs_queued=poker(supervisor, whole_ticks=True),
                shards=shards,
                handoff=Handoff(supervisor),
            )

        unsent = UnsentJobs()  # what a crashed dispatcher held, for the next instance
        specs.append(
            ActorSpec(
                "webhooks",
                lambda: WebhookDispatcher.from_settings(
                    settings, pool, demo=state.demo, unsent=unsent
                ),
                STAGE_OUTPUT,
            )
        )
        # Predictors first, then the intake: the first batch already finds them subscribed.
        specs.append(ActorSpec("model-sync", lambda: model_sync, STAGE_INTAKE))
        if intake:
            specs += self._intake_specs(make_batcher, shards, wake_send, wake_receive, page_send)
        if role == "supervisor":
            workers = WorkerPool(
                self.options.workers,
                {"DB_DSN": dsn},
                stop_deadline=settings.shutdown_deadline_seconds,
            )
            context.workers = workers
            context.worker_metrics = workers.scrape
            specs.append(ActorSpec("workers", lambda: workers, STAGE_INTAKE))
        if extras:
            specs += self._background_specs(context, shards.holder)
        specs.append(
            ActorSpec(
                "web",
                lambda: WebServer(create_app(context), settings.api_host, settings.api_port),
                STAGE_WEB,
            )
        )
        if self.options.demo and extras:
            specs.append(
                ActorSpec(
                    "demo",
                    lambda: DemoRunner(settings, pool, state, context),
                    STAGE_INTAKE,
                )
            )
        if self.options.dashboard and extras:
            specs.append(
                ActorSpec(
                    "dashboard",
                    # After "web": the dashboard is pointed at the port it really bound.
                    lambda: DashboardProcess.from_settings(
                        settings, api_base_url=self._local_api_url()
                    ),
                    STAGE_BACKGROUND,
                )
            )
        return specs

    def _intake_specs(
        self,
        make_batcher: Callable[[], Batcher],
        shards: ShardSet,
        wake_send: MemoryObjectSendStream[Wakeup],
        wake_receive: MemoryObjectReceiveStream[Wakeup],
        page_send: MemoryObjectSendStream[TickPage],
    ) -> list[ActorSpec]:
        settings, state, pool = self.settings, self.state, self.pool
        assert pool is not None and self.database is not None
        dsn = self.database.dsn
        specs = [ActorSpec("batcher", make_batcher, STAGE_BATCH)]
        # Leases before the poller (it starts with this process's share), released
        # after the batcher drained (its last batches commit under the leases).
        specs.append(
            ActorSpec(
                "shards", lambda: ShardLeases.from_settings(settings, pool, shards), STAGE_LEASES
            )
        )
        specs.append(
            ActorSpec(
                "poller",
                lambda: Poller.from_settings(
                    settings, pool, wake_receive, page_send, state, shards
                ),
                STAGE_INTAKE,
            )
        )
        specs.append(
            ActorSpec(
                "listener",
                lambda: Listener.from_settings(settings, dsn, wake_send, state),
                STAGE_INTAKE,
            )
        )
        return specs

    def _background_specs(self, context: AppContext, holder: str) -> list[ActorSpec]:
        settings, state, pool = self.settings, self.state, self.pool
        assert pool is not None and self.database is not None
        dsn = self.database.dsn
        specs: list[ActorSpec] = []
        # Housekeeping runs in one process among all replicas: the one holding the role's
        # lease starts these actors and stops them when it loses it (actors/shards/role_lease.py).
        housekeeping = [
            ActorSpec(
                "evaluator",
                lambda: Evaluator.from_settings(settings, pool).reporting_to(state),
                STAGE_BACKGROUND,
            )
        ]
        # API backtests: a worker process each, one at a time (actors/backtest/runner.py).
        backtest_runner = BacktestRunner(settings, dsn, pool)
        context.backtests_poke = backtest_runner.poke
        specs.append(ActorSpec("backtests", lambda: backtest_runner, STAGE_BACKGROUND))
        retained = (
            settings.webhook_retention_seconds,
            settings.webhook_dead_retention_seconds,
            settings.prediction_retention_seconds,
        )
        if max(retained) > 0:
            housekeeping.append(
                ActorSpec(
                    "retention", lambda: Retention.from_settings(settings, pool), STAGE_BACKGROUND
                )
            )
        role = RoleLease(
            pool,
            self.supervisor,
            role=HOUSEKEEPING,
            holder=holder,
            specs=housekeeping,
            lease_seconds=settings.shard_lease_seconds,
        )
        context.housekeeping = role
        specs.append(ActorSpec("housekeeping", lambda: role, STAGE_ROLES))
        return specs

    def _local_api_url(self) -> str:
        host = self.settings.api_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.web_port}"
