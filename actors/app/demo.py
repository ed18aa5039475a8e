"""Demo mode: synthetic coins, a stand-in Training Service, models imported for real.

Started by `pump-predictor serve` on the embedded database (unless --no-demo),
so a newcomer sees the whole pipeline within a minute: live coins, imported
models, predictions, webhooks, outcomes. The models go through the normal
import path (download, safe load, feature checks), nothing is short-cut.
Everything it writes is labelled as demo data in logs, the status page and
the dashboard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from actors.runtime.state import ServiceState
from actors.runtime.tools import load_script
from storage.clients.training_service import TrainingServiceClient
from storage.config import Settings, redact_url
from storage.models import active_models
from storage.models.model_import import ModelImportError, import_model
from storage.models.model_settings import update_settings
from web.context import AppContext

log = structlog.get_logger(__name__)


class DemoWebhookSink:
    """A stand-in n8n on 127.0.0.1: accepts the alerts and keeps the last few to look at.

    With a `record` (the embedded data directory's demo file) it listens on the
    same port at every start, so webhook jobs queued before a restart still reach
    it; a new port is taken (and recorded) only when the old one is in use.
    """

    def __init__(self, record: DemoRecord | None = None) -> None:
        self.received = 0
        self.last: list[dict[str, Any]] = []
        self.url: str | None = None
        self._record = record

    async def _post(self, request: web.Request) -> web.Response:
        self.received += 1
        self.last = [await request.json(), *self.last[:19]]
        return web.json_response({"ok": True})

    async def _get(self, _request: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "last": self.last})

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._post)
        app.router.add_get("/webhook", self._get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            wanted = self._record.n8n_port() if self._record is not None else None
            try:
                site = web.TCPSite(runner, "127.0.0.1", wanted or 0)
                await site.start()
            except OSError:
                log.warning("demo_n8n_port_taken", port=wanted, action="another port")
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
            port = runner.addresses[0][1]
            if self._record is not None:
                self._record.update(n8n_port=port)
            self.url = f"http://127.0.0.1:{port}/webhook"
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


class DemoRunner:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        state: ServiceState,
        context: AppContext,
        *,
        n_coins: int = 20,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._state = state
        self._context = context
        self._n_coins = n_coins
        self.imported: list[int] = []
        self.training_service_url: str | None = None
        # Only beside the embedded database: with DB_DSN the ids would mean nothing later.
        self.record = DemoRecord.for_settings(settings)
        self.sink = DemoWebhookSink(self.record)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        demo_data = load_script("demo_data")
        # Training the demo models takes seconds: readiness of the service does not wait.
        task_status.started()
        log.warning("demo_mode", note="SYNTHETIC coin_metrics and DEMO models; --no-demo to skip")
        async with (
            demo_data.demo_environment(self._pool, n_coins=self._n_coins) as env,
            aiohttp.ClientSession() as session,
            anyio.create_task_group() as tg,
        ):
            await tg.start(self.sink.run)
            self.training_service_url = env.training_service_url
            client = TrainingServiceClient(
                env.training_service_url,
                timeout=self._settings.training_service_timeout_seconds,
                session=session,
            )
            # The API's model routes use this stand-in while the demo runs.
            self._context.training_service = client
            try:
                for model_id in env.model_ids:
                    await self._import(client, model_id)
                log.warning(
                    "demo_ready",
                    training_service=env.training_service_url,
                    webhooks=redact_url(self._webhook_target() or "") or None,
                    models=self.imported,
                    coins=self._n_coins,
                )
                await anyio.sleep_forever()
            finally:
                self._context.training_service = None
                tg.cancel_scope.cancel()

    def _webhook_target(self) -> str | None:
        """The global N8N_WEBHOOK_URL when configured, else the demo sink."""
        return self._settings.n8n_webhook_url or self.sink.url

    async def _import(self, client: TrainingServiceClient, model_id: int) -> None:
        try:
            active_id = await import_model(self._pool, self._settings, client, model_id)
            log.warning("demo_model_imported", model_id=model_id, active_model_id=active_id)
        except ModelImportError as exc:
            if exc.code != "already_imported":
                log.error("demo_model_import_failed", model_id=model_id, error=exc.message)
                return
            # A restart on the same embedded database: the model is there already.
            async with self._pool.acquire() as conn:
                active_id = await conn.fetchval(
                    "SELECT id FROM active_models WHERE model_id = $1", model_id
                )
            if active_id is None:
                return
            # Deactivated by a --no-demo run on this data directory: the demo runs them again.
            async with self._pool.acquire() as conn:
                await active_models.set_active(conn, active_id, True)
        self.imported.append(active_id)
        if self.record is not None:
            self.record.update(active_model_ids=sorted(set(self.imported)))
        if not self._settings.n8n_webhook_url and self.sink.url:
            # Without a configured n8n the demo alerts go to the stand-in (new port each run).
            async with self._pool.acquire() as conn:
                await update_settings(conn, active_id, {"n8n_webhook_url": self.sink.url})


DEMO_RECORD_FILE = "demo.json"


class DemoRecord:
    """What a demo left in the embedded data directory: its stand-in n8n's port and
    its models, so a restart keeps the port and a `--no-demo` run finds the models."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_settings(cls, settings: Settings) -> DemoRecord | None:
        if not settings.embedded:
            return None
        return cls(Path(settings.embedded_data_dir) / DEMO_RECORD_FILE)

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def n8n_port(self) -> int | None:
        port = self.read().get("n8n_port")
        return port if isinstance(port, int) and 0 < port < 65536 else None

    def model_ids(self) -> list[int]:
        ids = self.read().get("active_model_ids")
        return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []

    def update(self, **values: Any) -> None:
        data = {**self.read(), **values}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(self.path)


async def retire_demo_models(settings: Settings, pool: asyncpg.Pool) -> list[int]:
    """A plain (`--no-demo`) start on a data directory a demo used: its demo models are
    deactivated, so they do not predict real rows and send alerts to a stand-in n8n
    that no longer runs. A later demo start activates them again."""
    record = DemoRecord.for_settings(settings)
    if record is None:
        return []
    retired = []
    async with pool.acquire() as conn:
        for active_id in record.model_ids():
            result = await active_models.set_active(conn, active_id, False)
            if result is not None and result[1]:
                retired.append(active_id)
    if retired:
        log.warning(
            "demo_models_deactivated",
            active_model_ids=retired,
            reason="--no-demo on a data directory with demo models; a demo start reactivates them",
        )
    return retired
