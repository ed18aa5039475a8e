"""Secrets are masked by the name they travel under, wherever text leaves the service.

Webhook services put credentials in query strings (`api_key`, `access_token`)
and in the path (an n8n webhook id); PostgreSQL DSNs carry `password` and
`sslpassword` as parameters; a Training Service's error page may echo the
request, `token=` included. None of it may reach `/api/config`, an API answer
or a log line as written; the host names stay, so the operator still sees
where things point.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from app_server import served
from log_capture import service_logs
from ports import closed_port
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import insert_active_model, store_predictions

from storage.config import Settings
from storage.db.pool import connect

HOOK_ID = "6f1c1f0e-3b1a-4d7e-9b1e-2a9c7d0e5f11"  # an n8n webhook id: whoever knows it may post


@pytest.fixture
def rendered_logs() -> Iterator[io.StringIO]:
    """The service's own log set-up (JSON lines), written to a buffer for the test."""
    with service_logs("json") as buffer:
        yield buffer


async def test_config_masks_secrets_by_key_name_in_urls_query_strings_and_dsn_parameters(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    secrets = [
        "kvPass-S3cret",
        "sslPass-S3cret",
        "ak1-S3cret",
        "ak2-S3cret",
        "at-S3cret",
        HOOK_ID,
        "sig-S3cret",
    ]
    configured = settings.replace(
        db_dsn="host=db.internal port=5432 user=pp password=kvPass-S3cret "
        "sslpassword=sslPass-S3cret dbname=pp",
        n8n_webhook_url=f"https://n8n.example/webhook/{HOOK_ID}"
        "?api_key=ak1-S3cret&apikey=ak2-S3cret&access_token=at-S3cret&mode=prod",
        training_service_api_url="http://trainer.internal:8000/api?signature=sig-S3cret",
    )
    async with served(configured, pool) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/config") as response:
            assert response.status == 200
            text = await response.text()
    for secret in secrets:
        assert secret not in text, secret
    config = json.loads(text)
    assert "host=db.internal" in config["db_dsn"] and "password=***" in config["db_dsn"]
    assert "sslpassword=***" in config["db_dsn"]
    assert config["n8n_webhook_url"].startswith("https://n8n.example/webhook/")
    assert "mode=prod" in config["n8n_webhook_url"]  # not a secret: still shown
    assert "trainer.internal" in config["training_service_api_url"]
    # Settings whose names merely mention auth or tokens are not secrets.
    assert config["api_auth_max_failures"] == configured.api_auth_max_failures
    assert config["api_token"] == ""


async def _echoing_training_service() -> TestServer:
    """A Training Service whose error page echoes the request and its configuration."""

    async def fail(request: web.Request) -> web.Response:
        return web.Response(
            status=500,
            text=f"upstream failed for {request.path_qs}&token=echoTok-S3cret; settings: "
            '{"access_token": "echoAt-S3cret", "password": "echoPw-S3cret"}',
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", fail)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.timeout(60)
async def test_error_bodies_answers_and_log_lines_mask_echoed_and_configured_secrets(
    settings: Settings, rendered_logs: io.StringIO
) -> None:
    echoed = ["echoTok-S3cret", "echoAt-S3cret", "echoPw-S3cret"]
    configured = ["hk-S3cret", "hat-S3cret", HOOK_ID]
    trainer = await _echoing_training_service()
    hook_url = (
        f"http://127.0.0.1:{closed_port()}/webhook/{HOOK_ID}"
        "?api_key=hk-S3cret&access_token=hat-S3cret"
    )
    settings = settings.replace(
        training_service_api_url=str(trainer.make_url("/api")),
        training_service_timeout_seconds=2.0,
        webhook_max_attempts=1,
    )
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 41, n8n_webhook_url=hook_url, is_active=False)
        await store_predictions(
            conn, model, [("MaskMint", datetime.now(UTC), 0.9)], default_url=None
        )
    finally:
        await conn.close()
    answers: dict[str, str] = {}
    try:
        async with running_service(settings) as service, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{service.web_port}"

            async def dead_job() -> bool:
                async with http.get(f"{base}/api/webhooks/dead") as response:
                    return bool((await response.json())["total"])

            await wait_for(dead_job, what="the webhook job to die on the closed port")
            for path in (
                "/api/models/available",
                "/api/models/available/5",
                f"/api/models/{model}/n8n-status",
                "/api/webhooks/dead",
            ):
                async with http.get(base + path) as response:
                    answers[path] = await response.text()
    finally:
        await trainer.close()
    # The Training Service's failure is reported with its status and its (masked) words.
    failure = json.loads(answers["/api/models/available"])["error"]
    assert failure["code"] == "training_service_error", failure
    assert "HTTP 500" in failure["message"], failure
    assert "token=***" in failure["message"], failure
    assert "webhook/***" in answers["/api/webhooks/dead"]
    assert "api_key=***" in answers[f"/api/models/{model}/n8n-status"]
    for path, text in answers.items():
        for secret in [*echoed, *configured]:
            assert secret not in text, f"GET {path} shows {secret}"
    logged = rendered_logs.getvalue()
    assert "webhook_dead" in logged and "webhook/***" in logged, logged[-2000:]
    for secret in [*echoed, *configured]:
        assert secret not in logged, f"a log line carries {secret}"
