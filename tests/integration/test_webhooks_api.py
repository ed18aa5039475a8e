"""Alert settings, n8n status and dead webhooks through the real HTTP API of a Service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from http_json import call_json
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import Answer, WebhookReceiver, insert_active_model, store_predictions

from actors.app.service import Service
from storage.config import Settings
from storage.db.pool import connect
from storage.models.model_settings import MODELS_CHANNEL
from web.openapi import documented_routes, registered_routes
from web.routes import alert_config as routes_alert_config

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[tuple[Service, aiohttp.ClientSession, str]]:
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        yield service, http, f"http://127.0.0.1:{service.web_port}"


async def _row(dsn: str, model: int) -> dict[str, Any]:
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", model)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def _model(dsn: str, model_id: int = 41, **columns: Any) -> int:
    """A seeded model, inactive by default: its file does not exist, and an active one
    would have the running model-sync actor record that (and try to fetch it again)."""
    columns.setdefault("is_active", False)
    conn = await connect(dsn)
    try:
        return await insert_active_model(conn, model_id, **columns)
    finally:
        await conn.close()


async def test_alert_config_patch_changes_only_the_named_fields_and_notifies(
    settings: Settings,
) -> None:
    settings = settings.replace(n8n_webhook_url="https://bot:s3cret@n8n.example/webhook/global")
    model = await _model(
        settings.db_dsn,
        n8n_webhook_url="https://n8n.example/webhook/own",
        n8n_send_modes=["alerts_only"],
        coin_filter_mode="whitelist",
        coin_whitelist=["MintA", "MintB"],
        ignore_alert_seconds=60,
        max_open_alert=3,
    )
    before = await _row(settings.db_dsn, model)
    listener = await asyncpg.connect(settings.db_dsn)
    notes: list[str] = []
    await listener.add_listener(MODELS_CHANNEL, lambda *args: notes.append(args[3]))
    try:
        async with api(settings) as (_, http, base):
            url = f"{base}/api/models/{model}/alert-config"
            status, body = await call_json(http, "PATCH", url, {"alert_threshold": 0.85})
            assert status == 200, body
            assert body["alert_threshold"] == 0.85
            assert body["n8n_send_modes"] == ["alerts_only"]
            assert body["coin_whitelist"] == ["MintA", "MintB"]
            assert body["effective_webhook_url"] == "https://n8n.example/webhook/own"
            assert body["webhook_url_source"] == "model"
            after = await _row(settings.db_dsn, model)
            changed = {k for k in before if before[k] != after[k]}
            assert changed == {"alert_threshold", "updated_at"}
            await wait_for(lambda: len(notes) == 1, what="NOTIFY on the models channel")
            assert json.loads(notes[0]) == {"active_model_id": model, "action": "settings"}

            status, body = await call_json(
                http,
                "PATCH",
                url,
                {"n8n_webhook_url": None, "n8n_send_modes": ["positive_only", "alerts_only"]},
            )
            assert status == 200, body
            assert body["alert_threshold"] == 0.85  # kept from the first PATCH
            assert body["n8n_webhook_url"] is None
            # Falls back to the global URL, shown without its password.
            assert body["effective_webhook_url"] == "https://bot:***@n8n.example/webhook/global"
            assert body["webhook_url_source"] == "global"
            assert "s3cret" not in json.dumps(body)
            status, fetched = await call_json(http, "GET", url)
            assert status == 200 and fetched == body
            final = await _row(settings.db_dsn, model)
            assert final["n8n_send_modes"] == ["positive_only", "alerts_only"]
            assert final["coin_filter_mode"] == "whitelist"
            assert (final["ignore_alert_seconds"], final["max_open_alert"]) == (60, 3)
    finally:
        await listener.close()


async def test_alert_config_patch_validates_each_field_and_changes_nothing_on_error(
    settings: Settings,
) -> None:
    model = await _model(settings.db_dsn)
    before = await _row(settings.db_dsn, model)
    cases: list[tuple[Any, int, str]] = [
        ({"alert_threshold": 0.49}, 422, "alert_threshold"),
        ({"alert_threshold": 1.01}, 422, "alert_threshold"),
        ({"alert_threshold": "0.8"}, 422, "alert_threshold"),
        ({"alert_threshold": True}, 422, "alert_threshold"),
        ({"n8n_webhook_url": "ftp://n8n.example/hook"}, 422, "n8n_webhook_url"),
        ({"n8n_webhook_url": "not a url"}, 422, "n8n_webhook_url"),
        ({"n8n_webhook_url": "http://"}, 422, "n8n_webhook_url"),
        ({"n8n_webhook_url": 5}, 422, "n8n_webhook_url"),
        ({"n8n_enabled": "yes"}, 422, "n8n_enabled"),
        ({"n8n_send_modes": []}, 422, "n8n_send_modes"),
        ({"n8n_send_modes": ["everything"]}, 422, "n8n_send_modes"),
        ({"n8n_send_modes": "all"}, 422, "n8n_send_modes"),
        ({"coin_filter_mode": "some"}, 422, "coin_filter_mode"),
        ({"coin_whitelist": "MintA"}, 422, "coin_whitelist"),
        ({"coin_whitelist": ["M" * 65]}, 422, "coin_whitelist"),
        ({"coin_filter_mode": "whitelist"}, 422, "coin_whitelist"),  # empty whitelist
        ({"alert_threshold": 0.8, "treshold": 0.9}, 422, "treshold"),  # atomic: nothing set
        ({}, 422, "body"),
        ([0.8], 400, "body"),
    ]
    async with api(settings) as (_, http, base):
        url = f"{base}/api/models/{model}/alert-config"
        for body, expected, field in cases:
            status, answer = await call_json(http, "PATCH", url, body)
            assert (status, answer["error"]["details"].get("field")) == (expected, field), body
            assert field in answer["error"]["message"], answer
        status, answer = await call_json(
            http, "PATCH", f"{base}/api/models/{model + 999}/alert-config", {"n8n_enabled": False}
        )
        assert status == 404, answer
        status, answer = await call_json(http, "GET", f"{base}/api/models/{model + 999}/n8n-status")
        assert status == 404, answer
    assert await _row(settings.db_dsn, model) == before


async def test_ignore_settings_and_caps_patch_only_named_fields(settings: Settings) -> None:
    model = await _model(settings.db_dsn, ignore_positive_seconds=30, max_open_negative=2)
    async with api(settings) as (_, http, base):
        ignore = f"{base}/api/models/{model}/ignore-settings"
        status, body = await call_json(http, "PATCH", ignore, {"ignore_alert_seconds": 86400})
        assert status == 200, body
        assert (body["ignore_alert_seconds"], body["ignore_positive_seconds"]) == (86400, 30)
        for bad in (86401, -1, 1.5, "10", None):
            status, body = await call_json(http, "PATCH", ignore, {"ignore_negative_seconds": bad})
            assert status == 422, (bad, body)
            assert body["error"]["details"]["field"] == "ignore_negative_seconds"

        caps = f"{base}/api/models/{model}/max-log-entries"
        # The original service's names still work.
        status, body = await call_json(http, "PATCH", caps, {"max_log_entries_per_coin_alert": 5})
        assert status == 200, body
        assert (body["max_open_alert"], body["max_log_entries_per_coin_alert"]) == (5, 5)
        assert body["max_open_negative"] == 2
        status, body = await call_json(http, "PATCH", caps, {"max_open_positive": 0})
        assert status == 200 and body["max_open_positive"] == 0 and body["max_open_alert"] == 5
        status, body = await call_json(
            http, "PATCH", caps, {"max_open_alert": 1, "max_log_entries_per_coin_alert": 2}
        )
        assert status == 422 and "given twice" in body["error"]["message"]
        status, body = await call_json(http, "PATCH", caps, {"max_open_alert": -1})
        assert status == 422 and body["error"]["details"]["field"] == "max_open_alert"
        status, body = await call_json(http, "GET", caps)
        assert status == 200 and body["max_open_alert"] == 5
        status, body = await call_json(http, "GET", ignore)
        assert status == 200 and body["ignore_alert_seconds"] == 86400
    row = await _row(settings.db_dsn, model)
    assert (row["ignore_negative_seconds"], row["ignore_positive_seconds"]) == (0, 30)
    assert (row["max_open_negative"], row["max_open_positive"], row["max_open_alert"]) == (2, 0, 5)


async def test_a_rejected_webhook_shows_in_n8n_status_and_the_dead_list_and_can_be_retried(
    settings: Settings,
) -> None:
    receiver = await WebhookReceiver().start()
    try:
        receiver.script("/hook", [Answer(400)])
        url = receiver.url("/hook").replace("http://", "http://bot:s3cret@")
        model = await _model(settings.db_dsn, n8n_webhook_url=url)
        quiet = await _model(settings.db_dsn, 42)
        async with api(settings) as (service, http, base):
            async with service.pool.acquire() as conn:  # type: ignore[union-attr]
                await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
            service.app_context.webhooks_poke()  # type: ignore[union-attr,misc]
            status_url = f"{base}/api/models/{model}/n8n-status"

            async def dead_in_status() -> Any:
                _, body = await call_json(http, "GET", status_url)
                return body if body["jobs"]["dead"] == 1 else None

            body = await wait_for(dead_in_status, what="the rejected job in n8n-status")
            # A job died in the last hour: loud, with the reason (issue #25).
            assert body["status"] == "degraded"
            assert body["reasons"] == [
                "1 webhook job(s) died in the last hour (see /api/webhooks/dead;"
                " POST /api/webhooks/retry-all sends them again)"
            ]
            assert body["losses_last_hour"] == {"dead": 1, "waiting": 0}
            # The stored error is the status code and a fixed reason, not the body.
            assert body["last_error"]["error"] == "HTTP 400: endpoint refused the request (4xx)"
            assert body["history_seconds"] == settings.webhook_retention_seconds == 21600
            assert body["last_error"]["status_code"] == 400
            assert body["last_error"]["outcome"] == "failed"
            assert body["last_error"]["active_model_ids"] == [model]
            assert body["last_error"]["model_ids"] == [41]
            assert body["last_success"] is None
            assert body["attempts_by_outcome"] == {
                "delivered": 0,
                "retry": 0,
                "failed": 1,
                "dead": 0,
                "wait": 0,
            }
            assert body["effective_webhook_url"].startswith("http://bot:***@127.0.0.1:")
            assert "s3cret" not in json.dumps(body)
            [dead_job] = body["dead_jobs"]
            assert dead_job["coin_id"] == "CoinA"
            assert dead_job["payload"]["predictions"][0]["tag"] == "alert"
            # The model the job refers to by snapshot is shown in full.
            shown = dead_job["payload"]["predictions"][0]["model"]
            assert "snapshot" not in shown and shown["features"] and shown["name"]
            assert len(receiver.received()) == 1  # 400 is not retried

            status, dead = await call_json(http, "GET", f"{base}/api/webhooks/dead?limit=10")
            assert status == 200 and dead["total"] == 1
            assert dead["jobs"][0]["id"] == dead_job["id"]
            status, answer = await call_json(http, "GET", f"{base}/api/webhooks/dead?limit=0")
            assert status == 400 and answer["error"]["details"]["field"] == "limit"
            status, empty = await call_json(http, "GET", f"{base}/api/webhooks/dead?limit=&offset=")
            assert status == 200 and empty["limit"] == 50 and empty["total"] == 1

            status, _ = await call_json(http, "POST", f"{base}/api/webhooks/{dead_job['id']}/retry")
            assert status == 200

            async def delivered() -> Any:
                _, body = await call_json(http, "GET", status_url)
                return body if body["status"] == "ok" else None

            body = await wait_for(delivered, what="the retried job delivered")
            assert body["jobs"] == {"pending": 0, "delivered": 1, "dead": 0, "waiting": 0}
            assert body["reasons"] == []
            assert body["last_success"]["status_code"] == 200
            assert body["attempts_by_outcome"]["delivered"] == 1
            assert [r.status for r in receiver.received()] == [400, 200]
            status, dead = await call_json(http, "GET", f"{base}/api/webhooks/dead")
            assert dead["total"] == 0
            status, answer = await call_json(
                http, "POST", f"{base}/api/webhooks/{dead_job['id']}/retry"
            )
            assert status == 409, answer
            status, answer = await call_json(http, "POST", f"{base}/api/webhooks/999999/retry")
            assert status == 404, answer
            # Another model's status knows nothing of these attempts.
            status, other = await call_json(http, "GET", f"{base}/api/models/{quiet}/n8n-status")
            assert status == 200
            assert other["status"] == "no_url" and other["last_attempt"] is None
    finally:
        await receiver.stop()


def test_alert_and_webhook_routes_are_all_documented_in_openapi() -> None:
    app = web.Application()
    app.add_routes(routes_alert_config.routes)
    mine = registered_routes(app)
    assert len(mine) == 12
    assert mine <= documented_routes()


NOT_REGISTERED = (
    '{"code":404,"message":"The requested webhook \\"POST pump-alerts\\" is not registered.",'
    '"hint":"The workflow must be active for a production URL to run successfully."}'
)


async def test_a_missing_endpoint_makes_status_degraded_and_its_jobs_wait_for_an_operator(
    settings: Settings,
) -> None:
    """A receiver answering n8n's 404 for ever (issue #25): jobs wait (not dead),
    n8n-status is degraded with the reason, /health lists it (200 "warning"), the
    waiting list shows the jobs, and a new URL for the model takes them along."""
    receiver = await WebhookReceiver().start()
    try:
        receiver.script("/gone", [Answer(404, body=NOT_REGISTERED)] * 100)
        model = await _model(settings.db_dsn, n8n_webhook_url=receiver.url("/gone"))
        async with api(settings.replace(webhook_not_found_grace_seconds=0.2)) as (
            service,
            http,
            base,
        ):
            async with service.pool.acquire() as conn:  # type: ignore[union-attr]
                ticks = [("CoinA", T0, 0.9), ("CoinB", T0, 0.95)]
                await store_predictions(conn, model, ticks, default_url=None)
            service.app_context.webhooks_poke()  # type: ignore[union-attr,misc]
            status_url = f"{base}/api/models/{model}/n8n-status"

            async def degraded() -> Any:
                _, body = await call_json(http, "GET", status_url)
                return body if body["jobs"]["waiting"] == 2 else None

            body = await wait_for(degraded, what="both jobs waiting in n8n-status")
            assert body["status"] == "degraded"
            assert body["reasons"] == [
                "2 webhook job(s) wait for a missing endpoint (404 beyond the grace;"
                " see /api/webhooks/waiting)"
            ]
            assert body["jobs"]["dead"] == 0
            assert body["endpoint"]["status"] == "missing"
            assert body["endpoint"]["last_status_code"] == 404
            assert body["last_error"]["error"].startswith("HTTP 404: n8n: webhook not registered")
            assert "workflow must be active" not in json.dumps(body)  # never the body
            assert {j["coin_id"] for j in body["waiting_jobs"]} == {"CoinA", "CoinB"}

            async with http.get(f"{base}/health") as response:
                health = await response.json()
                assert response.status == 200, health
            assert health["status"] == "warning"
            assert health["checks"]["webhooks"] == {"dead_last_hour": 0, "waiting": 2}
            assert any(r.startswith("webhooks: 2 webhook job(s) wait") for r in health["reasons"])

            status, waiting = await call_json(
                http, "GET", f"{base}/api/webhooks/waiting?active_model_id={model}"
            )
            assert status == 200 and waiting["total"] == 2
            status, lost = await call_json(http, "GET", f"{base}/api/webhooks/losses")
            assert status == 200 and lost["status"] == "degraded"
            assert lost["models"] == [{"active_model_id": model, "dead_last_hour": 0, "waiting": 2}]
            [missing] = lost["missing_endpoints"]
            assert missing["target_url"] == receiver.url("/gone")
            posts = len(receiver.received())

            # The user fixes the model's URL: the waiting jobs follow it and are delivered.
            status, _ = await call_json(
                http,
                "PATCH",
                f"{base}/api/models/{model}/alert-config",
                {"n8n_webhook_url": receiver.url("/fixed")},
            )
            assert status == 200

            async def delivered() -> Any:
                _, body = await call_json(http, "GET", status_url)
                return body if body["jobs"]["delivered"] == 2 else None

            body = await wait_for(delivered, what="the waiting jobs delivered to the new URL")
            assert body["status"] == "ok" and body["reasons"] == []
            fixed = [r for r in receiver.received()[posts:] if r.path == "/fixed"]
            assert sorted(r.body["coin_id"] for r in fixed) == ["CoinA", "CoinB"]
            async with http.get(f"{base}/health") as response:
                assert (await response.json())["status"] == "healthy"
    finally:
        await receiver.stop()


async def test_retry_all_sends_dead_and_waiting_jobs_again(settings: Settings) -> None:
    receiver = await WebhookReceiver().start()
    try:
        receiver.script("/hook", [Answer(400)])
        model = await _model(settings.db_dsn, n8n_webhook_url=receiver.url("/hook"))
        async with api(settings) as (service, http, base):
            async with service.pool.acquire() as conn:  # type: ignore[union-attr]
                await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
                await store_predictions(conn, model, [("CoinB", T0, 0.9)], default_url=None)
                # A job parked earlier on this URL (as a missing endpoint leaves it).
                await conn.execute(
                    "UPDATE webhook_outbox SET status = 'waiting' WHERE coin_id = 'CoinB'"
                )
            service.app_context.webhooks_poke()  # type: ignore[union-attr,misc]

            async def dead() -> Any:
                _, body = await call_json(http, "GET", f"{base}/api/webhooks/dead")
                return body["total"] == 1

            await wait_for(dead, what="the refused job dead")
            status, answer = await call_json(
                http, "POST", f"{base}/api/webhooks/retry-all", {"statuses": ["sent"]}
            )
            assert status == 422 and answer["error"]["details"]["field"] == "statuses"
            status, answer = await call_json(http, "POST", f"{base}/api/webhooks/retry-all", {})
            assert status == 422 and answer["error"]["details"]["field"] == "statuses"
            status, answer = await call_json(
                http, "POST", f"{base}/api/webhooks/retry-all", {"statuses": ["dead", "waiting"]}
            )
            assert status == 200 and answer["requeued"] == 2

            async def all_delivered() -> Any:
                _, body = await call_json(http, "GET", f"{base}/api/models/{model}/n8n-status")
                return body["jobs"]["delivered"] == 2

            await wait_for(all_delivered, what="both jobs delivered after retry-all")
        delivered = sorted(r.body["coin_id"] for r in receiver.received() if r.status == 200)
        assert delivered == ["CoinA", "CoinB"]
    finally:
        await receiver.stop()
