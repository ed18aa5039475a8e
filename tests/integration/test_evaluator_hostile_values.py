"""Collector values a double cannot hold never stop the evaluator (issue 18, item 4).

coin_metrics prices are plain numeric: 1e1000, NaN and Infinity are valid there.
Before, one such price made every evaluator cycle fail (the float8 cast of the
outcome raised), so every due prediction stayed pending; and a NaN close passed
an "up" target (NaN sorts above every number). The real service runs here, with
its evaluator, against a real PostgreSQL; the outcomes are read through the API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from prediction_rows import add_metric, add_model, add_prediction
from service_runner import running_service
from waiting import wait_for

from storage.config import Settings
from storage.predictions import evaluations

M = timedelta(minutes=1)


async def test_out_of_range_prices_are_not_applicable_and_the_others_are_judged(
    settings: Settings, pool: Any
) -> None:
    async with pool.acquire() as conn:
        now = await conn.fetchval("SELECT date_trunc('second', now())")
        t0 = now - timedelta(hours=2)
        model = await add_model(conn, 1)  # up 10 % within 5 minutes
        classic = await add_model(
            conn,
            2,
            target_kind="classic",
            target_variable="volume_sol",
            target_operator=">",
            target_value=5.0,
            future_minutes=None,
            price_change_percent=None,
            target_direction=None,
        )
        await add_metric(conn, "HUGE_AT_T", t0, 1)
        await conn.execute(
            "UPDATE coin_metrics SET price_close = '1e1000' WHERE mint = 'HUGE_AT_T'"
        )
        await add_metric(conn, "HUGE_AT_T", t0 + 2 * M, 2)
        await add_metric(conn, "HUGE_LATER", t0, 1)
        await conn.execute(
            "INSERT INTO coin_metrics (mint, timestamp, price_close, price_high, price_low)"
            " VALUES ('HUGE_LATER', $1, '1e1000', '1e1000', 1)",
            t0 + 2 * M,
        )
        await add_metric(conn, "NAN_LATER", t0, 1)
        await conn.execute(
            "INSERT INTO coin_metrics (mint, timestamp, price_close, price_high, price_low)"
            " VALUES ('NAN_LATER', $1, 'NaN', 'NaN', 'NaN')",
            t0 + 2 * M,
        )
        await add_metric(conn, "TINY_THEN_HUGE", t0, 1e-300)
        await add_metric(conn, "TINY_THEN_HUGE", t0 + 2 * M, 1e300)
        await add_metric(conn, "GOOD", t0, 100)
        await add_metric(conn, "GOOD", t0 + 2 * M, 120)
        await add_metric(conn, "VOLUME", t0, 1)
        await conn.execute("UPDATE coin_metrics SET volume_sol = 'Infinity' WHERE mint = 'VOLUME'")
        ids = {
            coin: await add_prediction(conn, model, coin, t0, prediction=1)
            for coin in ("HUGE_AT_T", "HUGE_LATER", "NAN_LATER", "TINY_THEN_HUGE", "GOOD")
        }
        ids["VOLUME"] = await add_prediction(conn, classic, "VOLUME", t0, prediction=1)

    configured = settings.replace(evaluation_interval_seconds=0.1, evaluation_grace_seconds=0)
    async with (
        running_service(configured) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):

        async def judged() -> dict[str, dict[str, Any]] | None:
            async with http.get("/api/predictions", params={"limit": "100"}) as response:
                body = await response.json()
            rows = {p["coin_id"]: p for p in body["items"]}
            return rows if all(p["status"] != "pending" for p in rows.values()) else None

        rows = await wait_for(judged, timeout=20, what="every prediction evaluated")

    assert rows["GOOD"]["evaluation_result"] == "success"
    assert rows["GOOD"]["actual_change_pct"] == 20
    for coin, reason in (
        ("HUGE_AT_T", evaluations.REASON_PRICE_AT_T_OUT_OF_RANGE),
        ("HUGE_LATER", evaluations.REASON_PRICE_AT_D_OUT_OF_RANGE),
        ("NAN_LATER", evaluations.REASON_PRICE_AT_D_OUT_OF_RANGE),
        ("TINY_THEN_HUGE", evaluations.REASON_CHANGE_OUT_OF_RANGE),
        ("VOLUME", evaluations.REASON_VARIABLE_OUT_OF_RANGE),
    ):
        row = rows[coin]
        assert (row["evaluation_result"], row["evaluation_reason"]) == ("not_applicable", reason)
        if coin != "VOLUME":  # a classic target's change is measured all the same
            assert row["actual_change_pct"] is None
    # The out-of-range high is skipped like a missing one: the extremes stay finite.
    assert rows["HUGE_LATER"]["max_gain_pct"] is None
    assert rows["HUGE_LATER"]["max_drawdown_pct"] == 0
