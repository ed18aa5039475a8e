"""Webhook targets are policed (issue #18 item 5): at PATCH time through the real API,
and again at delivery on the addresses the connection would use."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import anyio
import asyncpg
from http_json import call_json
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import (
    WebhookReceiver,
    insert_active_model,
    quick_dispatcher,
    store_predictions,
)

from actors.webhooks.targets import TargetPolicy
from storage.config import Settings
from storage.db.pool import connect

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_patch_refuses_internal_targets_and_names_the_setting_that_opens_them(
    settings: Settings,
) -> None:
    # Production defaults: nothing opened (the test fixture opens loopback for receivers).
    settings = settings.replace(webhook_allowed_networks="")
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 41, is_active=False)
    finally:
        await conn.close()
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.web_port}"
        config = f"{base}/api/models/{model}/alert-config"
        refused = [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[fe80::1]/x",
            "http://10.0.0.8:5678/webhook/pump-alerts",
            "http://172.16.4.4/x",
            "http://192.168.1.20:5678/webhook/pump-alerts",
            "http://127.0.0.1:5678/webhook/pump-alerts",
            "http://localhost:5678/webhook/pump-alerts",  # refused after resolution
            f"http://127.0.0.1:{service.web_port}/api/models",  # the service itself
        ]
        for url in refused:
            status, body = await call_json(http, "PATCH", config, {"n8n_webhook_url": url})
            assert status == 422, (url, body)
            assert body["error"]["details"]["field"] == "n8n_webhook_url"
            message = body["error"]["message"]
            assert "refused" in message, message
            if "metadata.google" not in url:
                assert "WEBHOOK_ALLOWED_NETWORKS" in message or "own API" in message, message
        async with http.get(config) as response:
            assert (await response.json())["n8n_webhook_url"] is None  # nothing stored
        status, body = await call_json(
            http,
            "PATCH",
            config,
            {"n8n_webhook_url": "https://n8n.example.com/webhook/pump-alerts"},
        )
        assert status == 200, body  # a public host (or one that does not resolve here)


async def test_the_services_own_api_stays_refused_when_loopback_is_allowed(
    settings: Settings,
) -> None:
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 41, is_active=False)
    finally:
        await conn.close()
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.web_port}"
        config = f"{base}/api/models/{model}/alert-config"
        status, body = await call_json(
            http, "PATCH", config, {"n8n_webhook_url": f"{base}/api/health"}
        )
        assert status == 422 and "own API" in body["error"]["message"]
        status, _ = await call_json(
            http, "PATCH", config, {"n8n_webhook_url": "http://127.0.0.1:1/hook"}
        )
        assert status == 200  # loopback opened by WEBHOOK_ALLOWED_NETWORKS (test settings)


async def test_delivery_refuses_a_name_that_resolves_inside_and_sends_nothing(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """A name that was public when configured and resolves to an internal address at
    delivery (DNS rebinding) is refused on the addresses the connection would use."""
    async with pool.acquire() as conn:
        # Written straight into the database, as a URL accepted earlier would be.
        by_name = await insert_active_model(
            conn, 41, n8n_webhook_url=f"http://localhost:{receiver.port}/hook"
        )
        by_ip = await insert_active_model(conn, 42, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, by_name, [("CoinA", T0, 0.9)], default_url=None)
        await store_predictions(conn, by_ip, [("CoinB", T0, 0.9)], default_url=None)
    dispatcher = quick_dispatcher(pool, targets=TargetPolicy())  # production default
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)

        async def settled() -> bool:
            rows = await pool.fetch("SELECT status FROM webhook_outbox")
            return {r["status"] for r in rows} == {"dead"}

        await wait_for(settled, what="both jobs refused")
        dispatcher.request_stop()
    rows = await pool.fetch(
        "SELECT a.outcome, a.status_code, a.error FROM webhook_attempts a ORDER BY a.id"
    )
    assert [(r["outcome"], r["status_code"]) for r in rows] == [("failed", None)] * 2
    for row in rows:
        assert "loopback" in row["error"] and "WEBHOOK_ALLOWED_NETWORKS" in row["error"]
    assert receiver.received() == []
