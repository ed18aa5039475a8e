"""A real webhook receiver for tests (aiohttp on 127.0.0.1) and helpers to make jobs.

The receiver records every request and answers from a script per path: a
sequence of `Answer`s (status, delay, Retry-After, or "hold until released"),
then the default answer. It can be stopped and started again on the same port
to play a receiver that is down.

The job helpers go through the real entry point the predictors use:
`webhook_jobs(...)` + `outbox.enqueue(...)` in the transaction that inserts the
predictions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from aiohttp import web
from model_factory import train_model

from actors.webhooks.dispatcher import WebhookDispatcher
from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    expand_snapshots,
    is_tail_key,
    snapshot_reference,
    tag_for,
    webhook_jobs,
)
from actors.webhooks.targets import TargetPolicy
from storage.model_files.store import file_sha256
from storage.models.model_settings import notify_model_changed
from storage.outbox import jobs as outbox
from storage.predictions import writes as predictions
from storage.predictions.writes import NewPrediction


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None
    hold: bool = False  # wait until `WebhookReceiver.release()`
    body: str | None = None  # the answer's body as is (default: a small JSON)
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic()
    status: int  # what the receiver answered (0 while held)
    peer: tuple[str, int] | None = None  # the client's address and port: its TCP connection


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    default: Answer = field(default_factory=Answer)
    requests: list[Received] = field(default_factory=list)
    _scripts: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    in_flight: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, path: str, answers: Sequence[Answer]) -> None:
        """Answer the next requests to `path` with `answers`, then with the default."""
        self._scripts[path].extend(answers)

    def release(self) -> None:
        """Let held requests (and future ones) answer."""
        self._release.set()

    def received(self, path: str | None = None) -> list[Received]:
        return [r for r in self.requests if path is None or r.path == path]

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.received(path)]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        script = self._scripts[request.path]
        answer = script.popleft() if script else self.default
        self.in_flight += 1
        try:
            if answer.hold:
                await self._release.wait()
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight -= 1
        self.requests.append(
            Received(
                request.path,
                dict(request.headers),
                body,
                time.monotonic(),
                answer.status,
                request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
        if answer.body is not None:
            return web.Response(
                text=answer.body,
                status=answer.status,
                headers=headers,
                content_type=answer.content_type,
            )
        return web.json_response({"ok": answer.status < 300}, status=answer.status, headers=headers)

    async def start(self) -> WebhookReceiver:
        """Listen (again) on the same port; the first start picks a free one."""
        if self.port == 0:
            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        """Go down: connections are refused until `start()`."""
        if self._runner is not None:
            self._release.set()
            await self._runner.cleanup()
            self._runner = None
            self._release = asyncio.Event()


# ---- making jobs the way the predictors do ----------------------------------------


async def insert_active_model(conn: asyncpg.Connection, model_id: int, **columns: Any) -> int:
    """An active_models row with sensible defaults; returns its id."""
    values: dict[str, Any] = {
        "model_id": model_id,
        "name": f"model-{model_id}",
        "model_type": "xgboost",
        "target_kind": "time_based",
        "target_variable": "price_close",
        "future_minutes": 5,
        "price_change_percent": 10.0,
        "target_direction": "up",
        "features": ["price_close", "volume_sol"],
        "phases": [1, 2],
        "file_path": f"/models/{model_id}.pkl",
        "file_sha256": "0" * 64,
    }
    values.update(columns)
    names = list(values)
    # Column names come from this test module's callers, never from input.
    sql = (
        f"INSERT INTO active_models ({', '.join(names)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING id"
    )
    return int(await conn.fetchval(sql, *values.values()))


async def add_trained_models(
    conn: asyncpg.Connection,
    tmp_path: Path,
    first_id: int,
    features: list[str],
    **columns: Any,
) -> list[int]:
    """An XGBoost and a RandomForest model trained on `features` (windows [5]), imported
    as the API does (row + model-change NOTIFY); returns their active model ids."""
    files = [
        ("xgboost", train_model("xgboost", features, seed=1, path=tmp_path / "xgb.pkl")),
        ("random_forest", train_model("random_forest", features, seed=2, path=tmp_path / "rf.pkl")),
    ]
    ids = []
    for offset, (kind, path) in enumerate(files):
        active_model_id = await insert_active_model(
            conn,
            first_id + offset,
            model_type=kind,
            features=features,
            phases=None,
            params={"use_engineered_features": True, "feature_engineering_windows": [5]},
            file_path=str(path),
            file_sha256=file_sha256(path),
            **columns,
        )
        await notify_model_changed(conn, active_model_id, "imported")
        ids.append(active_model_id)
    return ids


async def load_webhook_model(conn: asyncpg.Connection, active_model_id: int) -> WebhookModel:
    row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    assert row is not None
    return WebhookModel.from_row(row)


async def store_predictions(
    conn: asyncpg.Connection,
    active_model_id: int,
    ticks: Sequence[tuple[str, datetime, float]],
    *,
    default_url: str | None,
) -> int:
    """Insert predictions for (coin, data_timestamp, probability) and enqueue their jobs
    in one transaction, as a manual prediction does; returns the number of new jobs."""
    async with conn.transaction():
        model = await load_webhook_model(conn, active_model_id)
        reported = [
            ReportedPrediction(
                coin,
                at,
                int(p >= 0.5),
                p,
                tag_for(p, model.alert_threshold),
                model.alert_threshold,
            )
            for coin, at, p in ticks
        ]
        await predictions.insert_predictions(
            conn,
            [
                NewPrediction(
                    model.active_model_id,
                    model.model_id,
                    r.coin_id,
                    r.data_timestamp,
                    None,
                    r.prediction,
                    r.probability,
                    r.alert_threshold,
                    r.tag,
                    None,
                    None,
                    "time_based",
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "stream",
                    r.data_timestamp,
                )
                for r in reported
            ],
        )
        jobs = webhook_jobs(model, reported, default_url=default_url)
        return await outbox.enqueue(conn, jobs)


def quick_dispatcher(pool: asyncpg.Pool, **overrides: Any) -> WebhookDispatcher:
    """A dispatcher with short timeouts and backoff, for tests."""
    options: dict[str, Any] = {
        "timeout": 3.0,
        "concurrency": 8,
        "per_host_limit": 4,
        "max_age_seconds": 60,
        "max_attempts": 5,
        "poll_interval": 0.1,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        # The receivers listen on 127.0.0.1, which the default policy refuses.
        "targets": TargetPolicy(allow_loopback=True),
    }
    options.update(overrides)
    return WebhookDispatcher(pool, **options)


@asynccontextmanager
async def running(*dispatchers: WebhookDispatcher) -> AsyncIterator[None]:
    """The dispatchers running in a task group, asked to stop when the block ends."""
    async with anyio.create_task_group() as tg:
        for dispatcher in dispatchers:
            await tg.start(dispatcher.run)
        try:
            yield
        finally:
            for dispatcher in dispatchers:
                dispatcher.request_stop()


def model_reference_form(job: outbox.OutboxJob) -> outbox.OutboxJob:
    """`job` as the code before item tails (migration 0028) stored it: each item whole,
    its model object a reference to a model snapshot, and those snapshots carried."""
    old_tails: dict[str, str] = {}
    models: dict[str, outbox.ModelSnapshot] = {}
    for tail in job.snapshots:
        assert is_tail_key(tail.key), tail.key
        start = tail.json.index(',"model":') + len(',"model":')
        model_json = tail.json[start:-1]
        model = outbox.ModelSnapshot(hashlib.sha256(model_json.encode()).hexdigest(), model_json)
        models[model.key] = model
        old_tails[tail.key] = f"{tail.json[:start]}{snapshot_reference(model.key)}}}"
    return dataclasses.replace(
        job,
        payload=expand_snapshots(job.payload, old_tails),
        items_json=expand_snapshots(job.items_json, old_tails),
        snapshots=tuple(models.values()),
    )
