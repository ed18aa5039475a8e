"""Bearer token, secrets that never leave the service, and an honest `/health`.

With `API_TOKEN` set, a script that forgets the token (or sends a stale one)
must be refused with a JSON 401 on every mutating route and must change
nothing; reads are open or closed by `api_public_reads`. No answer and no log
line may carry a password, the token or webhook credentials (the service being
replaced returned its database password from `/config`). `/health` is what the
container HEALTHCHECK and load balancers trust, so it must say 503 with the
reason when the database is gone or intake lags, and recover by itself.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import structlog
from app_server import served
from http_json import call_json
from ports import closed_port
from prediction_rows import add_metric, add_model
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import insert_active_model, store_predictions

from storage.config import Settings
from storage.db.pool import connect
from web.openapi import openapi_document

if TYPE_CHECKING:
    from conftest import PgCluster

TOKEN = "tok-7Qm2-very-secret-api-token"
PATH_PARAM = re.compile(r"\{(\w+)\}")
OPEN_PATHS = {"/health", "/api/health"}
UNKNOWN_ID = "987654"


def _operations(methods: set[str]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
        if method.upper() in methods
    ]


def _url(base: str, path: str, **values: Any) -> str:
    defaults = {
        "id": UNKNOWN_ID,
        "model_id": UNKNOWN_ID,
        "job_id": UNKNOWN_ID,
        "backtest_id": UNKNOWN_ID,
        "coin_id": "NoMint",
    }
    defaults.update({k: str(v) for k, v in values.items()})
    return base + PATH_PARAM.sub(lambda m: defaults[m.group(1)], path)


async def _send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    authorization: str | None = None,
    body: Any = None,
) -> tuple[int, str, str]:
    """(status, content type, text) of one request."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    data = None if body is None else json.dumps(body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with http.request(method, url, headers=headers, data=data) as response:
        return response.status, response.content_type, await response.text()


def _assert_unauthorized(status: int, content_type: str, text: str, where: str) -> None:
    assert status == 401, f"{where}: {status} {text[:200]}"
    assert content_type == "application/json", where
    error = json.loads(text)["error"]
    assert set(error) == {"code", "message", "details"}, where
    assert error["code"] == "unauthorized", where
    assert TOKEN not in text, where


async def _model_row(pool: asyncpg.Pool, active_model_id: int) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    return dict(row) if row is not None else None


async def test_every_mutating_route_refuses_a_missing_or_wrong_token_and_changes_nothing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    settings = settings.replace(
        api_token=TOKEN,
        training_service_api_url=f"http://127.0.0.1:{closed_port()}/api",
        # This test fails authentication on purpose, a hundred times.
        api_auth_max_failures=0,
        api_auth_failure_delay_seconds=0.0,
    )
    async with pool.acquire() as conn:
        model = await add_model(conn, 61)
    before = await _model_row(pool, model)
    mutating = _operations({"POST", "PATCH", "DELETE"})
    assert len(mutating) >= 12
    wrong = [
        None,
        "Bearer not-the-token",
        f"Bearer {TOKEN[:-1]}",  # a prefix is not the token
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,  # no scheme
        "Bearer ",
    ]
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        for method, path, operation in mutating:
            body: dict[str, Any] | None = {} if "requestBody" in operation else None
            # Aimed at the real model: a refused request must not touch it.
            target = _url(base, path, id=model)
            for authorization in wrong:
                status, content_type, text = await _send(
                    http, method, target, authorization=authorization, body=body
                )
                _assert_unauthorized(status, content_type, text, f"{method} {path} {authorization}")
            # The right token passes the gate (on an unknown id: the answer is the handler's).
            for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
                status, _, text = await _send(
                    http, method, _url(base, path), authorization=authorization, body=body
                )
                assert status != 401, f"{method} {path}: {text[:200]}"
                assert status in {400, 404, 422, 502, 503}, f"{method} {path}: {status} {text}"
    assert await _model_row(pool, model) == before


async def test_reads_are_open_or_closed_by_api_public_reads_and_probes_always_open(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    reads = _operations({"GET"})
    closed_ts = f"http://127.0.0.1:{closed_port()}/api"
    for public in (True, False):
        configured = settings.replace(
            api_token=TOKEN,
            api_public_reads=public,
            training_service_api_url=closed_ts,
            api_auth_max_failures=0,
            api_auth_failure_delay_seconds=0.0,
        )
        async with served(configured, pool) as base, aiohttp.ClientSession() as http:
            for _, path, _ in reads:
                where = f"GET {path} public_reads={public}"
                status, content_type, text = await _send(http, "GET", _url(base, path))
                if public or path in OPEN_PATHS:
                    assert status != 401, where
                else:
                    _assert_unauthorized(status, content_type, text, where)
                    status, _, text = await _send(
                        http, "GET", _url(base, path), authorization=f"Bearer {TOKEN}"
                    )
                    assert status != 401, f"{where} with the token: {text[:200]}"
            # The exporter at the root too (Prometheus scrapes it with the token when closed).
            status, _, _ = await _send(http, "GET", f"{base}/metrics")
            assert (status == 200) is public


async def test_config_shows_every_setting_but_no_password_token_or_webhook_credentials(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    secrets = ["dbPassw0rd-S3cret", TOKEN, "hookPass-S3cret", "tsPass-S3cret", "qTok-S3cret"]
    configured = settings.replace(
        db_dsn="postgresql://pp_user:dbPassw0rd-S3cret@db.internal:5432/pp?sslmode=require",
        api_token=TOKEN,
        n8n_webhook_url="https://n8n-bot:hookPass-S3cret@n8n.example/webhook/x?token=qTok-S3cret",
        training_service_api_url="http://trainer:tsPass-S3cret@trainer.internal:8000/api",
    )
    async with served(configured, pool) as base, aiohttp.ClientSession() as http:
        status, content_type, text = await _send(http, "GET", f"{base}/api/config")
    assert (status, content_type) == (200, "application/json")
    for secret in secrets:
        assert secret not in text, secret
    config = json.loads(text)
    # Still useful to an operator: every key, and where things point.
    # Beside the settings: the versions of the libraries that decide predictions.
    assert set(config) == set(settings.public_view()) | {"libraries"}
    assert urlsplit(config["db_dsn"]).hostname == "db.internal"
    assert urlsplit(config["db_dsn"]).username == "pp_user"
    assert urlsplit(config["n8n_webhook_url"]).hostname == "n8n.example"
    assert config["api_token"] == "***"
    assert config["api_public_reads"] is True


async def test_no_answer_and_no_log_line_carries_a_secret(settings: Settings) -> None:
    """Every GET route of a running service, after a webhook to a URL with credentials died."""
    hook_port, ts_port = closed_port(), closed_port()
    hook_secret, ts_secret = "hookPass-S3cret", "tsPass-S3cret"
    secrets = [TOKEN, hook_secret, ts_secret]
    db_password = urlsplit(settings.db_dsn).password
    if db_password:
        secrets.append(db_password)
    hook_url = f"http://n8n-bot:{hook_secret}@127.0.0.1:{hook_port}/webhook/own"
    settings = settings.replace(
        api_token=TOKEN,
        api_public_reads=False,
        n8n_webhook_url=f"http://n8n-bot:{hook_secret}@127.0.0.1:{hook_port}/webhook/global",
        training_service_api_url=f"http://trainer:{ts_secret}@127.0.0.1:{ts_port}/api",
        training_service_timeout_seconds=2.0,
        webhook_max_attempts=1,
    )
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 71, n8n_webhook_url=hook_url, is_active=False)
        await store_predictions(
            conn, model, [("SecretMint", datetime.now(UTC), 0.9)], default_url=None
        )
    finally:
        await conn.close()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with structlog.testing.capture_logs() as logs:
        async with (
            running_service(settings) as service,
            aiohttp.ClientSession(headers=auth) as http,
        ):
            base = f"http://127.0.0.1:{service.web_port}"

            async def dead_job() -> bool:
                async with http.get(f"{base}/api/webhooks/dead") as response:
                    return bool((await response.json())["total"])

            await wait_for(dead_job, what="the webhook job to die on the closed port")
            answers: dict[str, str] = {}
            for _, path, _ in _operations({"GET"}):
                url = _url(base, path, id=model, coin_id="SecretMint")
                async with http.get(url) as response:
                    answers[path] = await response.text()
                    assert response.status < 500 or response.status in {502, 503}, path
    # The dead job and its attempt are shown, with the URL redacted.
    assert "n8n-bot:***@127.0.0.1" in answers["/api/webhooks/dead"]
    assert "n8n-bot:***@127.0.0.1" in answers["/api/models/{id}/n8n-status"]
    # The Training Service is named in its 502, without its password.
    assert "127.0.0.1" in answers["/api/models/available"]
    for path, text in answers.items():
        for secret in secrets:
            assert secret not in text, f"GET {path} shows {secret}"
    assert logs, "the run logged nothing at all"
    logged = repr(logs)
    for secret in secrets:
        assert secret not in logged, f"a log line carries {secret}"


def _health_reasons(body: dict[str, Any]) -> list[str]:
    reasons: list[str] = body["reasons"]
    return reasons


async def test_health_is_200_when_database_listener_and_lag_are_fine(settings: Settings) -> None:
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.web_port}"

        async def healthy() -> dict[str, Any] | None:
            status, body = await call_json(http, "GET", f"{base}/health")
            return body if status == 200 and body["checks"].get("listener") == "up" else None

        body = await wait_for(healthy, what="a healthy service with its listener up")
        assert body["status"] == "healthy"
        assert body["reasons"] == []
        assert body["checks"]["database"] == "ok"
        async with http.get(f"{base}/api/health") as response:
            assert response.status == 200


async def test_health_is_503_while_intake_lags_beyond_the_bound_then_recovers(
    settings: Settings,
) -> None:
    settings = settings.replace(health_max_lag_seconds=60.0)
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.web_port}"
        await wait_for(lambda: _status_is(http, base, 200), what="healthy at start")
        conn = await connect(settings.db_dsn)
        try:
            # A tick that arrives 10 minutes after its data time: the collector is behind.
            await add_metric(conn, "LateMint", datetime.now(UTC) - timedelta(minutes=10), 1.0)

            async def lagging() -> dict[str, Any] | None:
                status, body = await call_json(http, "GET", f"{base}/health")
                return body if status == 503 else None

            body: dict[str, Any] = await wait_for(lagging, what="503 for intake lag")
            assert body["status"] == "degraded"
            assert any("intake lag" in r and "exceeds 60s" in r for r in _health_reasons(body))
            assert body["checks"]["intake_lag_seconds"] > 60
            assert body["checks"]["database"] == "ok"
            # Fresh data again: healthy without a restart.
            await add_metric(conn, "LateMint", datetime.now(UTC), 1.1)
            await wait_for(lambda: _status_is(http, base, 200), what="healthy after fresh data")
        finally:
            await conn.close()


async def _status_is(http: aiohttp.ClientSession, base: str, expected: int) -> bool:
    status, _ = await call_json(http, "GET", f"{base}/health")
    return status == expected


async def test_health_is_503_while_the_database_refuses_connections_then_recovers(
    settings: Settings, pg_cluster: PgCluster
) -> None:
    database = urlsplit(settings.db_dsn).path.lstrip("/")
    # From another database: a session cannot lock others out of its own.
    admin = await asyncpg.connect(pg_cluster.admin_dsn)
    try:
        async with running_service(settings) as service, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{service.web_port}"
            await wait_for(lambda: _status_is(http, base, 200), what="healthy at start")
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )

            async def degraded() -> dict[str, Any] | None:
                status, body = await call_json(http, "GET", f"{base}/health")
                return body if status == 503 else None

            body = await wait_for(degraded, what="503 while the database refuses connections")
            assert "database does not answer" in _health_reasons(body)
            assert body["checks"]["database"].startswith("error")
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await wait_for(
                lambda: _status_is(http, base, 200),
                timeout=30,
                what="healthy again once the database accepts connections",
            )
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
