"""Guessing the token is slow, visible and soon refused; an open API says so at start-up.

Every failed authentication is logged for the operator (client, route, why:
never the value presented, which may be a real token meant for another
service), answered only after a constant delay, and a client that keeps
failing gets 429 for a while, even once it sends the right token. An API that
listens beyond loopback without `API_TOKEN` logs a warning when it starts.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from app_server import served
from prediction_rows import add_model
from structlog.testing import capture_logs
from waiting import wait_for

from storage.config import Settings
from web.app import create_app
from web.context import AppContext

TOKEN = "tok-guard-9Xq-real-token"


async def _post(
    http: aiohttp.ClientSession, url: str, authorization: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with http.post(url, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_failed_authentications_are_logged_without_the_value_and_answered_after_a_delay(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    delay = 0.3
    settings = settings.replace(
        api_token=TOKEN, api_auth_failure_delay_seconds=delay, api_auth_max_failures=0
    )
    async with pool.acquire() as conn:
        model = await add_model(conn, 31, is_active=False)
    presented = [None, "Bearer guess-Zr81-S3cret", "Basic dXNlcjpwYXNzLVMzY3JldA==", "Bearer "]
    with capture_logs() as logs:
        async with served(settings, pool) as base, aiohttp.ClientSession() as http:
            url = f"{base}/api/models/{model}/activate"
            for authorization in presented:
                started = time.monotonic()
                status, body, _ = await _post(http, url, authorization)
                waited = time.monotonic() - started
                assert status == 401, body
                assert body["error"]["code"] == "unauthorized"
                # A lower bound, not a speed claim: the refusal is held back by the delay.
                assert waited >= delay, f"{authorization!r} answered after {waited:.3f}s"
            status, body, _ = await _post(http, url, f"Bearer {TOKEN}")
            assert status == 200, body
    failures = [e for e in logs if e["event"] == "api_authentication_failed"]
    assert len(failures) == len(presented), logs
    for event in failures:
        assert event["log_level"] == "warning"
        assert event["client"] == "127.0.0.1"
        assert event["path"] == f"/api/models/{model}/activate"
        assert event["method"] == "POST"
        assert event["reason"] in {"missing", "not_bearer", "wrong_token"}
    assert {e["reason"] for e in failures} == {"missing", "not_bearer", "wrong_token"}
    logged = repr(logs)
    for value in ("guess-Zr81-S3cret", "dXNlcjpwYXNzLVMzY3JldA==", TOKEN):
        assert value not in logged


async def test_a_client_that_keeps_failing_gets_429_until_the_window_has_passed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    window = 2.0
    settings = settings.replace(
        api_token=TOKEN,
        api_auth_failure_delay_seconds=0.0,
        api_auth_max_failures=3,
        api_auth_failure_window_seconds=window,
    )
    async with pool.acquire() as conn:
        model = await add_model(conn, 32, is_active=False)
    with capture_logs() as logs:
        async with served(settings, pool) as base, aiohttp.ClientSession() as http:
            url = f"{base}/api/models/{model}/activate"
            for _ in range(3):
                status, body, _ = await _post(http, url, "Bearer wrong")
                assert status == 401, body
            status, body, headers = await _post(http, url, "Bearer wrong")
            assert status == 429, body
            assert body["error"]["code"] == "too_many_requests"
            assert set(body["error"]) == {"code", "message", "details"}
            assert 1 <= int(headers["Retry-After"]) <= window
            # The right token does not get through while the client is blocked: otherwise
            # the difference between 429 and 200 would still answer every guess.
            status, body, _ = await _post(http, url, f"Bearer {TOKEN}")
            assert status == 429, body
            async with pool.acquire() as conn:
                assert (
                    await conn.fetchval("SELECT is_active FROM active_models WHERE id = $1", model)
                    is False
                )
            # Public reads are not behind the token, so they stay open.
            async with http.get(f"{base}/api/models") as response:
                assert response.status == 200

            async def accepted() -> bool:
                status, _, _ = await _post(http, url, f"Bearer {TOKEN}")
                return status == 200

            await wait_for(accepted, timeout=10 * window, what="the block to expire")
    assert any(e["event"] == "api_authentication_rate_limited" for e in logs)


async def test_start_up_warns_when_the_api_listens_beyond_loopback_without_a_token(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The app's start-up (what the service runs before binding), for each host setting.

    Tests bind only 127.0.0.1, so the hook is run without binding the other hosts.
    """
    cases = [
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("192.0.2.10", "", True),
        ("0.0.0.0", TOKEN, False),
        ("127.0.0.1", "", False),
        ("::1", "", False),
        ("localhost", "", False),
    ]
    for host, token, warned in cases:
        configured = settings.replace(api_host=host, api_token=token)
        runner = web.AppRunner(create_app(AppContext(settings=configured, pool=pool)))
        with capture_logs() as logs:
            await runner.setup()
        await runner.cleanup()
        warnings = [e for e in logs if e["event"] == "api_listens_beyond_loopback_without_token"]
        assert bool(warnings) is warned, (host, token, logs)
        if warned:
            assert warnings[0]["log_level"] == "warning"
            assert warnings[0]["host"] == host
            assert "API_TOKEN" in warnings[0]["hint"]
