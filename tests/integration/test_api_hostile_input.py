"""Input no handler should have to think about gets a 4xx naming the field, never a 500.

A caller with a bug (or a grudge) sends text PostgreSQL cannot store (a NUL, a
lone UTF-16 surrogate), JSON nested a thousand deep, a date-time that does not
exist in UTC, or a name of 100 000 characters; and the collector may write
`'Infinity'` into a price. Each case was a 500 (or invalid JSON, or a stored
absurdity) before; here each must be a clear JSON error naming the field, with
nothing changed, and every JSON answer must stay strict JSON.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest
from app_server import served
from prediction_rows import add_metric, add_model, add_prediction, set_outcome
from service_runner import predictors_running, running_service
from training_service_stub import TrainingServiceStub, training_service
from waiting import wait_for

from storage.config import Settings
from storage.db.pool import connect
from storage.text_rules import MAX_NAME_LENGTH

__all__ = ["training_service"]  # the fixture, found by pytest through this import

COIN = "HostileMint111111111111111111111111111111pump"


def _strict_json(text: str) -> Any:
    """Parse as a strict JSON parser (a browser, jq, Go) would: no NaN, no Infinity."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"not JSON: bare {token} in {text[:300]}")

    return json.loads(text, parse_constant=refuse)


async def _request(
    http: aiohttp.ClientSession, method: str, url: str, body: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with http.request(method, url, data=body, headers=headers) as response:
        text = await response.text()
        assert response.content_type == "application/json", f"{method} {url}: {text[:200]}"
        return response.status, _strict_json(text)


def _assert_names_field(status: int, body: Any, field: str, where: str) -> None:
    assert 400 <= status < 500, f"{where}: {status} {body}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, where
    assert error["details"].get("field") == field, f"{where}: {error}"
    assert field in error["message"], f"{where}: {error}"


async def _model_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM active_models ORDER BY id")
    return [dict(r) for r in rows]


async def test_nul_and_lone_surrogates_in_bodies_paths_and_queries_are_a_4xx_naming_the_field(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        model = await add_model(conn, 81)
    before = await _model_rows(pool)
    m = f"/api/models/{model}"
    # json.dumps writes "\u0000" and "\ud800" escapes: valid JSON text, unstorable strings.
    cases: list[tuple[str, str, Any, str]] = [
        ("PATCH", f"{m}/rename", {"name": "pump\x00bot"}, "name"),
        ("PATCH", f"{m}/rename", {"name": "pump\ud800bot"}, "name"),
        (
            "PATCH",
            f"{m}/alert-config",
            {"n8n_webhook_url": "http://n8n.test/x\x00"},
            "n8n_webhook_url",
        ),
        (
            "PATCH",
            f"{m}/alert-config",
            {"coin_filter_mode": "whitelist", "coin_whitelist": [COIN, "Mint\x00"]},
            "coin_whitelist[1]",
        ),
        ("PATCH", f"{m}/alert-config", {"coin_whitelist": ["\udc80Mint"]}, "coin_whitelist[0]"),
        ("GET", "/api/predictions?coin_id=Mint%00", None, "coin_id"),
        ("GET", "/api/predictions/latest/Mint%00", None, "coin_id"),
        ("GET", f"{m}/coins/Mint%00/details", None, "coin_id"),
        ("GET", "/api/webhooks/dead?limit=5%00", None, "limit"),
    ]
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        for method, path, payload, field in cases:
            body = None if payload is None else json.dumps(payload)
            status, answer = await _request(http, method, base + path, body)
            _assert_names_field(status, answer, field, f"{method} {path} {payload!r}")
    assert await _model_rows(pool) == before


async def test_json_nested_beyond_the_bound_is_a_400_naming_the_body(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        model = await add_model(conn, 82)
    before = await _model_rows(pool)
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        for depth in (1000, 100_000):
            body = '{"name": ' + "[" * depth + "]" * depth + "}"
            for method, path in (
                ("PATCH", f"/api/models/{model}/rename"),
                ("PATCH", f"/api/models/{model}/alert-config"),
                ("POST", "/api/models/import"),
            ):
                status, answer = await _request(http, method, base + path, body)
                assert status == 400, f"{path} depth {depth}: {status} {answer}"
                assert answer["error"]["code"] == "invalid_json"
                assert "nested deeper than" in answer["error"]["message"]
        # Just over the bound, where the parser itself copes: the deepest field is named.
        status, answer = await _request(
            http,
            "PATCH",
            f"{base}/api/models/{model}/rename",
            '{"name": ' + "[" * 40 + "]" * 40 + "}",
        )
        assert status == 400, answer
        assert answer["error"]["details"]["field"].startswith("name[0][0]")
    assert await _model_rows(pool) == before


async def test_dates_outside_the_representable_range_are_a_400_naming_the_field(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        model = await add_model(conn, 83)
    earliest, latest = "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"
    cases = [
        ("/api/predictions", "date_from", earliest),
        ("/api/predictions", "date_to", latest),
        ("/api/predictions", "predicted_from", earliest),
        ("/api/predictions", "data_to", latest),
        ("/api/alerts/statistics", "date_from", earliest),
        ("/api/alerts/statistics", "date_to", latest),
        (f"/api/models/{model}/statistics", "date_from", earliest),
    ]
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        for path, name, value in cases:
            async with http.get(base + path, params={name: value}) as response:
                answer = _strict_json(await response.text())
                _assert_names_field(response.status, answer, name, f"{path}?{name}={value}")
                assert "range" in answer["error"]["message"]
        for name, value in (("from", earliest), ("to", latest)):
            payload = json.dumps({"model_id": 1, name: value})
            status, answer = await _request(http, "POST", f"{base}/api/backtests", payload)
            _assert_names_field(status, answer, name, f"POST /api/backtests {name}={value}")
        # The edges themselves are fine.
        async with http.get(
            f"{base}/api/predictions", params={"date_from": "0001-01-01T00:00:00+00:00"}
        ) as response:
            assert response.status == 200


@pytest.mark.timeout(120)
async def test_predict_refuses_unstorable_coin_ids_and_unrepresentable_timestamps(
    settings: Settings, training_service: TrainingServiceStub
) -> None:
    """POST /api/predict on the running service with a real model running."""
    training_service.add_model(85, "random_forest", ["price_close"])
    settings = settings.replace(training_service_api_url=training_service.base_url)
    conn = await connect(settings.db_dsn)
    try:
        await add_metric(conn, COIN, datetime.now(UTC) - timedelta(minutes=1), 1.0)
    finally:
        await conn.close()
    cases = [
        ({"coin_id": "Mint\x00"}, "coin_id"),
        ({"coin_id": "Mint\ud83d"}, "coin_id"),
        ({"coin_id": COIN, "timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
        ({"coin_id": COIN, "timestamp": "9999-12-31T23:59:59-14:00"}, "timestamp"),
    ]
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.web_port}"
        status, imported = await _request(
            http, "POST", f"{base}/api/models/import", json.dumps({"model_id": 85})
        )
        assert status == 201, imported

        await wait_for(lambda: predictors_running(service) > 0, what="the imported model running")
        for payload, field in cases:
            status, answer = await _request(
                http, "POST", f"{base}/api/predict", json.dumps(payload)
            )
            _assert_names_field(status, answer, field, repr(payload))
        # The service is still whole: a good request predicts.
        status, answer = await _request(
            http, "POST", f"{base}/api/predict", json.dumps({"coin_id": COIN})
        )
        assert status == 200, answer


async def test_non_finite_numbers_are_written_as_null_and_every_answer_stays_strict_json(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    t0 = datetime.now(UTC) - timedelta(hours=2)
    async with pool.acquire() as conn:
        model = await add_model(conn, 84)
        # The collector's numeric column holds 'Infinity' / 'NaN' as well as prices.
        await add_metric(conn, COIN, t0, float("inf"))
        await add_metric(conn, COIN, t0 + timedelta(minutes=1), float("nan"))
        await add_metric(conn, COIN, t0 + timedelta(minutes=2), 1.5)
        # A NaN change compares above every number in PostgreSQL: "up 10 %" came true,
        # so a prediction of 0 failed.
        judged = await add_prediction(
            conn, model, COIN, t0, prediction=0, price_close_at_t=float("inf")
        )
        await set_outcome(conn, judged, "failed", change=float("nan"))
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        status, listed = await _request(http, "GET", f"{base}/api/predictions?coin_id={COIN}")
        assert status == 200
        [item] = listed["items"]
        assert item["price_close_at_t"] is None
        assert item["actual_change_pct"] is None
        status, latest = await _request(http, "GET", f"{base}/api/predictions/latest/{COIN}")
        assert status == 200
        assert latest["predictions"][0]["price_close_at_t"] is None
        status, details = await _request(
            http, "GET", f"{base}/api/models/{model}/coins/{COIN}/details"
        )
        assert status == 200, details
        closes = [p["price_close"] for p in details["price_history"]]
        assert closes[:2] == [None, None]
        assert closes[2] is not None and math.isfinite(closes[2])


@pytest.mark.timeout(120)
async def test_one_name_length_cap_for_import_and_rename(
    settings: Settings, pool: asyncpg.Pool, training_service: TrainingServiceStub
) -> None:
    huge = "N" * 100_000
    training_service.add_model(91, "random_forest", name=huge)
    training_service.add_model(92, "random_forest", name="L" * MAX_NAME_LENGTH)
    settings = settings.replace(training_service_api_url=training_service.base_url)
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        status, answer = await _request(
            http, "POST", f"{base}/api/models/import", json.dumps({"model_id": 91})
        )
        assert status == 422, f"{status} {str(answer)[:300]}"
        assert answer["error"]["details"]["field"] == "name"
        assert str(MAX_NAME_LENGTH) in answer["error"]["message"]
        assert huge not in json.dumps(answer)
        assert await _model_rows(pool) == []
        assert not [f async for f in anyio.Path(settings.model_storage_path).glob("*")]
        # The import list says so before anyone tries.
        status, offered = await _request(http, "GET", f"{base}/api/models/available")
        by_id = {m["id"]: m for m in offered["models"]}
        assert by_id[91]["importable"] is False
        assert by_id[92]["importable"] is True
        # A name at the cap imports; a rename is held to the same cap.
        status, imported = await _request(
            http, "POST", f"{base}/api/models/import", json.dumps({"model_id": 92})
        )
        assert status == 201, imported
        rename = f"{base}/api/models/{imported['id']}/rename"
        status, answer = await _request(
            http, "PATCH", rename, json.dumps({"name": "R" * (MAX_NAME_LENGTH + 1)})
        )
        _assert_names_field(status, answer, "name", "rename over the cap")
        status, renamed = await _request(
            http, "PATCH", rename, json.dumps({"name": "R" * MAX_NAME_LENGTH})
        )
        assert status == 200 and renamed["name"] == "R" * MAX_NAME_LENGTH
