"""The webhook dispatcher alone: POSTs per second and CPU per POST.

In the pipeline benchmark webhooks share the event loop with everything else,
so what one POST costs is hard to see there. Here the outbox is filled first
(one job per coin tick carrying every model's prediction, built as the batcher
builds them), then the real `WebhookDispatcher` delivers them to a receiver in
another process on 127.0.0.1. Reported: POSTs/s, the CPU of this process
(the dispatcher) and of PostgreSQL per POST, claims and settlement flushes.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg

from actors.webhooks.dispatcher import WebhookDispatcher
from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    tag_for,
    tick_jobs,
    webhook_items,
)
from actors.webhooks.targets import TargetPolicy
from storage.db.pool import create_pool
from storage.outbox import jobs as outbox

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = [f"feature_{i}" for i in range(40)]


def _receiver(port: int, ready: Any) -> None:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async def started(_app: web.Application) -> None:
        ready.set()

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.on_startup.append(started)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _models(conn: asyncpg.Connection, count: int, url: str) -> list[WebhookModel]:
    models = []
    for i in range(count):
        row = await conn.fetchrow(
            """
            INSERT INTO active_models (model_id, name, model_type, target_kind,
                target_variable, future_minutes, price_change_percent, target_direction,
                features, file_path, file_sha256, n8n_webhook_url)
            VALUES ($1, $2, 'xgboost', 'time_based', 'price_close', 10, 5.0, 'up', $3,
                $4, $5, $6)
            RETURNING *
            """,
            100 + i,
            f"bench model {100 + i}",
            FEATURES,
            f"/bench/{100 + i}.pkl",
            "0" * 64,
            url,
        )
        models.append(WebhookModel.from_row(row))
    return models


async def _fill(conn: asyncpg.Connection, models: Sequence[WebhookModel], ticks: int) -> None:
    for start in range(0, ticks, 500):
        batch = [
            (f"bench{j:06d}pump", T0 + timedelta(seconds=j))
            for j in range(start, min(ticks, start + 500))
        ]
        items = []
        for i, model in enumerate(models):
            probability = 0.3 + 0.06 * i
            tag = tag_for(probability, model.alert_threshold)
            reported = [
                ReportedPrediction(
                    coin, at, int(probability >= 0.5), probability, tag, model.alert_threshold
                )
                for coin, at in batch
            ]
            items += webhook_items(model, reported, default_url=None)
        await outbox.enqueue(conn, tick_jobs(items))


async def run(
    dsn: str,
    *,
    ticks: int,
    models: int,
    concurrency: int,
    per_host_limit: int,
    postgres_cpu: Callable[[], float],
    port: int,
) -> dict[str, Any]:
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(target=_receiver, args=(port, ready), daemon=True)
    receiver.start()
    try:
        if not await anyio.to_thread.run_sync(ready.wait, 30.0):
            raise SystemExit("bench: the webhook receiver did not start")
        pool = await create_pool(dsn)
        try:
            async with pool.acquire() as conn:
                webhook_models = await _models(conn, models, f"http://127.0.0.1:{port}/hook")
                fill_pg = postgres_cpu()
                await _fill(conn, webhook_models, ticks)
                fill_pg = postgres_cpu() - fill_pg
            dispatcher = WebhookDispatcher(
                pool,
                timeout=10.0,
                concurrency=concurrency,
                per_host_limit=per_host_limit,
                max_age_seconds=3600.0,
                max_attempts=5,
                targets=TargetPolicy(allow_loopback=True),  # the receiver is on 127.0.0.1
            )
            pg_before, cpu_before, started = postgres_cpu(), time.process_time(), time.monotonic()
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)
                # The dispatcher has no event for "N delivered": its counter is polled.
                while dispatcher.delivered_jobs < ticks:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                seconds = time.monotonic() - started
                cpu, pg = time.process_time() - cpu_before, postgres_cpu() - pg_before
                dispatcher.request_stop()
            undelivered = await pool.fetchval(
                "SELECT count(*) FROM webhook_outbox WHERE status <> 'delivered'"
            )
            # What every delivered tick leaves on disk (nothing removes it yet).
            outbox_bytes, attempts_bytes = await pool.fetchrow(
                "SELECT pg_total_relation_size('webhook_outbox'),"
                " pg_total_relation_size('webhook_attempts')"
            )
        finally:
            await pool.close()
    finally:
        receiver.terminate()
        receiver.join(5)
    return {
        "posts": ticks,
        "models_per_post": models,
        "undelivered": undelivered,
        "concurrency": concurrency,
        "per_host_limit": per_host_limit,
        "seconds": round(seconds, 3),
        "posts_per_s": round(ticks / seconds, 1),
        "dispatcher_cpu_ms_per_post": round(cpu / ticks * 1000, 3),
        "postgres_cpu_ms_per_post": round(pg / ticks * 1000, 3),
        # Queueing the jobs (500 per statement, as a batch of the pipeline queues them).
        "enqueue_postgres_cpu_ms_per_job": round(fill_pg / ticks * 1000, 3),
        "claims": dispatcher.claims,
        "settle_flushes": dispatcher.settle_flushes,
        "outbox_bytes_per_post": round(outbox_bytes / ticks),
        "attempts_bytes_per_post": round(attempts_bytes / ticks),
    }
