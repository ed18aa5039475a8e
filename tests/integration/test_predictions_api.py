"""GET /api/predictions (filters and a real total), latest per coin, a model's coin details
and deleting a model's predictions, through real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prediction_rows import (
    ApiClient,
    add_metric,
    add_model,
    add_prediction,
    serve_api,
    set_outcome,
)

from actors.housekeeping.evaluator import Evaluator
from storage.config import Settings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


async def _ids(api: ApiClient, **params: object) -> tuple[int, list[int]]:
    status, body = await api.get("/api/predictions", **params)
    assert status == 200, body
    return body["total"], [item["id"] for item in body["items"]]


async def test_filters_pages_and_real_total(settings: Settings, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        a = await add_model(conn, 21)
        b = await add_model(conn, 22)
        ids: dict[str, int] = {}
        # 30 predictions of model a for coin AAA, one a minute, probabilities 0.00 .. 0.87
        for i in range(30):
            ids[f"a{i}"] = await add_prediction(
                conn, a, "AAA", T0 + i * M, prediction=int(i >= 15), probability=i * 0.03
            )
        # b0 is predicted later than a0 (its own predicted_at): a manual prediction, so
        # on its own coin tick row (a tick's predictions share their predicted_at).
        ids["b0"] = await add_prediction(
            conn,
            b,
            "AAA",
            T0,
            prediction=1,
            probability=0.99,
            source="manual",
            predicted_at=T0 + 100 * M,
        )
        ids["b1"] = await add_prediction(conn, b, "BBB", T0 + M, prediction=0, probability=0.1)
        await set_outcome(conn, ids["a0"], "success", change=1.0)
        await set_outcome(conn, ids["a1"], "failed", change=12.0)  # rose: 0 was wrong
        await set_outcome(conn, ids["b1"], "not_applicable", reason="no row")

    async with serve_api(settings, pool) as api:
        status, body = await api.get("/api/predictions")
        assert status == 200
        assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (
            32,
            100,
            0,
            32,
        )
        item = next(i for i in body["items"] if i["id"] == ids["a0"])
        assert item["evaluation_result"] == "success"
        assert item["model_name"] == "model-21"
        assert item["data_timestamp"] == T0.isoformat()

        total, page = await _ids(api, active_model_id=a, limit=10, offset=25)
        # newest first: a29 .. a25, then a4 .. a0 are on later pages
        assert total == 30
        assert page == [ids[f"a{i}"] for i in range(4, -1, -1)]
        assert await _ids(api, model_id=22) == (2, [ids["b1"], ids["b0"]])
        assert (await _ids(api, coin_id="BBB"))[1] == [ids["b1"]]
        assert (await _ids(api, evaluation_result="pending"))[0] == 29
        assert (await _ids(api, evaluation_result="not_applicable"))[1] == [ids["b1"]]
        assert (await _ids(api, tag="alert"))[0] == 6 + 1  # p >= 0.7: a24..a29, b0
        total, page = await _ids(api, probability_min=0.3, probability_max=0.45, model_id=21)
        assert page == [ids[f"a{i}"] for i in (15, 14, 13, 12, 11, 10)]
        total, page = await _ids(
            api, date_from=(T0 + 28 * M).isoformat(), date_to="2026-01-01T12:29:00+00:00"
        )
        assert page == [ids["a29"], ids["a28"]]
        # An unencoded '+' in the offset arrives as a space and still means UTC+0.
        status, body = await api.call(
            "GET", "/api/predictions?date_from=2026-01-01T12:29:00+00:00&coin_id=AAA"
        )
        assert (status, body["total"]) == (200, 1)
        assert await _ids(api, predicted_to=(T0 + 200 * M).isoformat()) == (1, [ids["b0"]])
        assert (await _ids(api, offset=1000))[0] == 32  # the total survives an empty page

        for params, name in [
            ({"probability_min": "abc"}, "probability_min"),
            ({"probability_max": "1.5"}, "probability_max"),
            ({"tag": "hot"}, "tag"),
            ({"evaluation_result": "done"}, "evaluation_result"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"offset": "-1"}, "offset"),
            ({"active_model_id": "one"}, "active_model_id"),
            ({"date_from": "yesterday"}, "date_from"),
            ({"coin": "AAA"}, "coin"),
            ({"probability_min": "0.8", "probability_max": "0.2"}, "probability_max"),
        ]:
            status, body = await api.get("/api/predictions", **params)
            assert status == 400, params
            assert body["error"]["details"]["field"] == name, params
            assert name in body["error"]["message"]


async def test_latest_per_model_for_a_coin(settings: Settings, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        a = await add_model(conn, 21)
        b = await add_model(conn, 22)
        await add_prediction(conn, a, "AAA", T0, prediction=0)
        newest_a = await add_prediction(conn, a, "AAA", T0 + 2 * M, prediction=1)
        newest_b = await add_prediction(conn, b, "AAA", T0 + M, prediction=0)
        await add_prediction(conn, b, "BBB", T0 + 9 * M, prediction=0)
    async with serve_api(settings, pool) as api:
        status, body = await api.get("/api/predictions/latest/AAA")
        assert status == 200
        assert [p["id"] for p in body["predictions"]] == [newest_a, newest_b]
        assert body["predictions"][0]["status"] == "pending"
        status, body = await api.get("/api/predictions/latest/NOPE")
        assert status == 404


async def test_coin_details_show_price_history_relative_to_the_prediction(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        t0 = now - timedelta(hours=1)
        model = await add_model(conn, 31)  # up 10 % in 5 min
        await add_metric(conn, "COIN", t0 - 20 * M, 1.0)  # before the window
        await add_metric(conn, "COIN", t0 - 5 * M, 1.8)
        await add_metric(conn, "COIN", t0, 2.0)
        await add_metric(conn, "COIN", t0 + 3 * M, 2.5, high=3.0, low=1.5)
        await add_metric(conn, "COIN", t0 + 14 * M, 2.2)
        await add_metric(conn, "COIN", t0 + 19 * M, 9.0)  # after the window (last due + 10)
        first = await add_prediction(conn, model, "COIN", t0, prediction=1)
        second = await add_prediction(conn, model, "COIN", t0 + 3 * M, prediction=0)
    await Evaluator(pool, grace_seconds=30, interval=1, page_size=10).evaluate_due()

    async with serve_api(settings, pool) as api:
        status, body = await api.get(f"/api/models/{model}/coins/COIN/details")
        assert status == 200
        assert [p["id"] for p in body["predictions"]] == [first, second]
        assert body["predictions"][0]["evaluation_result"] == "success"
        assert body["predictions"][0]["actual_change_pct"] == 25
        assert body["reference"]["price_close"] == 2.0
        assert body["reference"]["timestamp"] == t0.isoformat()
        history = [(p["timestamp"], p["change_pct"]) for p in body["price_history"]]
        assert history == [
            ((t0 - 5 * M).isoformat(), -10.0),
            (t0.isoformat(), 0.0),
            ((t0 + 3 * M).isoformat(), 25.0),
            ((t0 + 14 * M).isoformat(), pytest.approx(10)),
        ]
        assert body["price_history"][2]["high_pct"] == 50
        assert body["price_history"][2]["low_pct"] == -25
        assert body["price_history_truncated"] is False

        status, body = await api.get(f"/api/models/{model}/coins/COIN/details", points=2)
        assert (len(body["price_history"]), body["price_history_truncated"]) == (2, True)
        status, body = await api.get(f"/api/models/{model}/coins/COIN/details", limit=1)
        assert [p["id"] for p in body["predictions"]] == [second]
        assert body["predictions_total"] == 2

        assert (await api.get(f"/api/models/{model}/coins/OTHER/details"))[0] == 404
        assert (await api.get("/api/models/999/coins/COIN/details"))[0] == 404
        status, body = await api.get(f"/api/models/{model}/coins/COIN/details", points="lots")
        assert (status, body["error"]["details"]["field"]) == (400, "points")


async def test_delete_model_predictions_returns_the_count(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        a = await add_model(conn, 21)
        b = await add_model(conn, 22)
        for i in range(3):
            await add_prediction(conn, a, "AAA", T0 + i * M, prediction=0)
        await add_prediction(conn, b, "AAA", T0, prediction=0)
    async with serve_api(settings, pool) as api:
        assert await api.call("DELETE", f"/api/models/{a}/predictions") == (
            200,
            {"active_model_id": a, "deleted": 3},
        )
        assert (await _ids(api))[0] == 1
        assert await api.call("DELETE", f"/api/models/{a}/predictions") == (
            200,
            {"active_model_id": a, "deleted": 0},
        )
        assert (await api.call("DELETE", "/api/models/999/predictions"))[0] == 404


async def test_coin_details_answer_when_prices_are_beyond_double(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A collector price of 1e1000 or NaN (valid numeric) leaves its % empty, not a 500."""
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        t0 = now - timedelta(hours=1)
        model = await add_model(conn, 32)
        await add_metric(conn, "WILD", t0, 2.0)
        for minute, value in ((1, "1e1000"), (2, "NaN"), (3, "-1e1000")):
            await conn.execute(
                "INSERT INTO coin_metrics (mint, timestamp, price_close, price_high, price_low)"
                " VALUES ('WILD', $1, $2::numeric, $2::numeric, $2::numeric)",
                t0 + minute * M,
                value,
            )
        await add_metric(conn, "WILD", t0 + 4 * M, 3.0)
        await add_prediction(conn, model, "WILD", t0, prediction=1)
        await add_metric(conn, "HUGE_REF", t0, 1.0)
        await conn.execute("UPDATE coin_metrics SET price_close = '1e1000' WHERE mint = 'HUGE_REF'")
        await add_metric(conn, "HUGE_REF", t0 + M, 2.0)
        await add_prediction(conn, model, "HUGE_REF", t0, prediction=1)

    async with serve_api(settings, pool) as api:
        status, body = await api.get(f"/api/models/{model}/coins/WILD/details")
        assert status == 200, body
        changes = [(p["timestamp"], p["change_pct"]) for p in body["price_history"]]
        assert changes == [
            (t0.isoformat(), 0.0),
            ((t0 + M).isoformat(), None),
            ((t0 + 2 * M).isoformat(), None),
            ((t0 + 3 * M).isoformat(), None),
            ((t0 + 4 * M).isoformat(), 50.0),
        ]
        assert [p["high_pct"] for p in body["price_history"]][1:4] == [None, None, None]
        status, body = await api.get(f"/api/models/{model}/coins/HUGE_REF/details")
        assert status == 200, body
        assert [p["change_pct"] for p in body["price_history"]] == [None, None]
