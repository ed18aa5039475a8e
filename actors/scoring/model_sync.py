"""Keep one running predictor per active model, in step with the database.

Every change of active_models (import, activate, deactivate, settings, reload,
delete) NOTIFYs our channel in the transaction that makes it; this actor
LISTENs on its own connection and re-reads the active models. It loads a new
model file off the event loop, then starts, swaps or stops predictors. A swap
takes effect between two batches of that predictor, so no batch is dropped or
half-processed by two models. A periodic re-read covers lost notifications.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors.runtime import metrics
from actors.runtime.supervisor import STAGE_PREDICT, ActorSpec, Supervisor
from actors.scoring.model_runtime import ModelRuntime, load_runtime
from actors.scoring.predictor import Predictor
from storage.model_files.store import ModelFileError
from storage.models import active_models
from storage.models.model_settings import MODELS_CHANNEL

log = structlog.get_logger(__name__)

PredictorFactory = Callable[[ModelRuntime], Predictor]
# Makes a model's file usable again (re-download when missing or altered), or raises.
FileRepair = Callable[[int], Awaitable[None]]
REPAIR_EVERY_SECONDS = 60.0


def predictor_name(active_model_id: int) -> str:
    return f"predictor-{active_model_id}"


class ModelSync:
    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        supervisor: Supervisor,
        make_predictor: PredictorFactory,
        *,
        resync_interval: float = 30.0,
        repair: FileRepair | None = None,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._supervisor = supervisor
        self._make_predictor = make_predictor
        self._resync_interval = resync_interval
        # Survives predictor restarts: a restarted predictor runs the current model.
        self.runtimes: dict[int, ModelRuntime] = {}
        self.failures: dict[int, str] = {}
        self._repair = repair
        self._repaired_at: dict[int, float] = {}
        self._changed = anyio.Event()
        # The API syncs too (activate/import answer once the predictor runs): one at a time.
        self._lock = anyio.Lock()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            conn.add_termination_listener(lambda _c: self._changed.set())
            await conn.add_listener(MODELS_CHANNEL, self._on_notify)
            await self.sync()
            task_status.started()
            while True:
                with anyio.move_on_after(self._resync_interval):
                    await self._changed.wait()
                self._changed = anyio.Event()
                if conn.is_closed():
                    raise ConnectionError("model-sync LISTEN connection lost")
                await self.sync()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await conn.close()

    async def _load(self, active_model_id: int, row: dict[str, Any]) -> ModelRuntime:
        """Load the model; a missing or altered file is fetched again (at most once a minute)."""
        try:
            return await anyio.to_thread.run_sync(load_runtime, row)
        except (FileNotFoundError, ModelFileError) as first:
            last = self._repaired_at.get(active_model_id, 0.0)
            if self._repair is None or time.monotonic() - last < REPAIR_EVERY_SECONDS:
                raise
            self._repaired_at[active_model_id] = time.monotonic()
            log.warning("model_file_repair", active_model_id=active_model_id, reason=str(first))
            await self._repair(active_model_id)
            async with self._pool.acquire() as conn:
                fresh = await active_models.full_row(conn, active_model_id)
            if fresh is None:
                raise
            return await anyio.to_thread.run_sync(load_runtime, fresh)

    def _on_notify(self, _c: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._changed.set()

    async def sync(self) -> None:
        """Bring the running predictors in line with the active models.

        Called by this actor on every change and by the API before it answers a
        change, so a row committed after the answer meets the new predictor.
        """
        async with self._lock:
            await self._sync()

    async def _sync(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await active_models.active_rows(conn)
        wanted = {int(r["id"]): r for r in rows}
        for active_model_id, row in wanted.items():
            await self._ensure(active_model_id, row)
        for active_model_id in list(self.runtimes):
            if active_model_id not in wanted:
                # Gone on purpose: its actor series leave /health and pp_actor_up.
                await self._supervisor.stop_actor(predictor_name(active_model_id), forget=True)
                self.runtimes.pop(active_model_id, None)
                log.info("predictor_stopped", active_model_id=active_model_id)
        metrics.ACTIVE_MODELS.set({}, float(len(self.runtimes)))

    async def _ensure(self, active_model_id: int, row: dict[str, Any]) -> None:
        current = self.runtimes.get(active_model_id)
        name = predictor_name(active_model_id)
        if current is not None and dict(current.row) == row:
            return
        try:
            if current is not None and current.file_version == (
                str(row["file_path"]),
                str(row["file_sha256"]),
            ):
                runtime = current.with_row(row)
            else:
                runtime = await self._load(active_model_id, row)
        except Exception as exc:
            # A model that cannot be loaded does not run: never a placeholder.
            if self.failures.get(active_model_id) != str(exc):
                log.error("model_load_failed", active_model_id=active_model_id, error=str(exc))
                metrics.MODEL_LOAD_FAILURES.inc({"model": str(active_model_id)})
            self.failures[active_model_id] = str(exc)
            return
        self.failures.pop(active_model_id, None)
        self.runtimes[active_model_id] = runtime
        if name in self._supervisor.actor_names:
            predictor: Predictor = self._supervisor.actor(name)
            predictor.swap(runtime)
            log.info("predictor_swapped", active_model_id=active_model_id)
        else:
            await self._supervisor.spawn(
                ActorSpec(
                    name,
                    lambda: self._make_predictor(self.runtimes[active_model_id]),
                    STAGE_PREDICT,
                )
            )
            log.info("predictor_started", active_model_id=active_model_id, model=runtime.name)
