"""Any row the coin_metrics column types allow is predicted or skipped with a reason.

The real service, real models, real PostgreSQL. Collector rows with values no sane
collector writes (timestamps at ±infinity, before Christ or centuries ahead; NaN,
±Infinity and numerics beyond double; zero and negative prices; a (mint, timestamp)
written twice) sit between good rows: every good tick is predicted, each bad one is
counted in pp_ticks_skipped_total{reason} and named in one log line, the cursor
moves past it, and no actor restarts.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from coin_rows import coin_rows, insert_rows
from intake_cursor import cursor_reached
from metrics_reader import metrics_text, samples
from service_runner import predictors_running, running_service, service_get
from structlog.testing import capture_logs
from waiting import wait_for
from webhook_receiver import add_trained_models

from actors.app.service import Service
from storage.config import Settings
from storage.db.pool import connect

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return settings.replace(batch_timeout_seconds=0.01)


async def column_types(conn: asyncpg.Connection) -> dict[str, str]:
    """coin_metrics' columns and their SQL types as the database declares them."""
    rows = await conn.fetch(
        """
        SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = 'coin_metrics'::regclass AND attnum > 0 AND NOT attisdropped
        """
    )
    return {r["attname"]: r["type"] for r in rows}


async def insert_raw(conn: asyncpg.Connection, rows: list[dict[str, str | None]]) -> list[int]:
    """Rows given as PostgreSQL text literals (so 'infinity', '4713-01-01 BC', 'NaN',
    '1e1000' arrive as the collector's own INSERT would write them), in ONE statement,
    ids in row order."""
    types = await column_types(conn)
    columns = sorted({c for r in rows for c in r})
    arrays = [[r.get(c) for r in rows] for c in columns]
    select = ", ".join(f"${i}::text[]" for i in range(1, len(columns) + 1))
    casts = ", ".join(f'"{c}"::{types[c]}' for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f"INSERT INTO coin_metrics ({names}) SELECT {casts} "
        f"FROM unnest({select}) WITH ORDINALITY AS t({names}, n) ORDER BY n RETURNING id"
    )
    return [int(r["id"]) for r in await conn.fetch(sql, *arrays)]


def as_text(row: dict[str, Any]) -> dict[str, str | None]:
    """A generated good row as text literals (for `insert_raw`)."""
    out: dict[str, str | None] = {}
    for name in ("mint", "timestamp", "phase_id_at_time", "price_close", "price_high"):
        out[name] = None if row[name] is None else str(row[name])
    for name in ("price_low", "price_open", "volume_sol", "buy_pressure_ratio", "num_buys"):
        out[name] = None if row[name] is None else str(row[name])
    return out


async def predicted(conn: asyncpg.Connection, ticks: dict[str, datetime], models: int) -> bool:
    rows = await conn.fetch("SELECT coin_id, data_timestamp FROM predictions")
    seen = Counter((r[0], r[1]) for r in rows)
    return all(seen[(coin, at)] == models for coin, at in ticks.items())


def intake_skips(text: str) -> Counter[str]:
    """pp_ticks_skipped_total of intake (no model label) by reason, from /metrics."""
    found: Counter[str] = Counter()
    for labels, value in samples(text, "pp_ticks_skipped_total"):
        if "model" not in labels:
            found[labels["reason"]] += int(value)
    return found


async def history(
    conn: asyncpg.Connection, coins: list[str], n: int, start: datetime
) -> dict[str, datetime]:
    """`n` good rows per coin in one statement; returns each coin's newest timestamp."""
    rows = [r for i, c in enumerate(coins) for r in coin_rows(c, n, start=start, seed=i + 1)]
    await insert_rows(conn, rows)
    return {c: max(r["timestamp"] for r in rows if r["mint"] == c) for c in coins}


async def test_rows_with_unusable_timestamps_are_skipped_and_every_coin_is_still_predicted(
    quick: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """'4713-01-01 BC' crash-looped the poller, ±infinity the batcher; a row centuries
    ahead was predicted (due in the year 3000) and made the intake lag negative."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=200)
    try:
        models = await add_trained_models(conn, tmp_path, 701, FEATURES)
        with capture_logs() as logs:
            async with running_service(quick) as service:
                await wait_for(lambda: predictors_running(service) == len(models), what="models")
                before = intake_skips(await metrics_text(f"http://127.0.0.1:{service.web_port}"))
                first = await history(conn, ["coinA", "coinB"], 30, start)
                await wait_for(lambda: predicted(conn, first, len(models)), what="first ticks")
                # Bad rows of a new coin and inside the good coins' histories.
                bad = [
                    {"mint": "coinA", "timestamp": "4713-01-01 BC", "price_close": "1"},
                    {"mint": "coinA", "timestamp": "-infinity", "price_close": "1"},
                    {"mint": "badTime", "timestamp": "infinity", "price_close": "1"},
                    {"mint": "coinB", "timestamp": "3000-01-01 00:00:00+00", "price_close": "1"},
                ]
                bad_ids = await insert_raw(conn, bad)
                later = await history(conn, ["coinA", "coinB"], 3, start + timedelta(seconds=180))
                await wait_for(
                    lambda: predicted(conn, later, len(models)), timeout=20, what="later ticks"
                )
                await wait_for(lambda: cursor_reached(conn, max(bad_ids)), what="cursor")
                after = intake_skips(await metrics_text(f"http://127.0.0.1:{service.web_port}"))
                status, health = await service_get(service, "/health")
                restarts = dict(service.state.actor_restarts)
                lag = service.state.intake_lag_seconds
        stored = await conn.fetch("SELECT coin_id, data_timestamp FROM predictions")
    finally:
        await conn.close()

    assert {r["coin_id"] for r in stored} == {"coinA", "coinB"}
    assert max(r["data_timestamp"] for r in stored) < datetime.now(UTC)
    assert after - before == Counter({"timestamp_out_of_range": 2, "timestamp_in_future": 2})
    skipped = [e for e in logs if e["event"] == "tick_skipped" and "row_id" in e]
    assert sorted((e["coin_id"], e["data_timestamp"], e["reason"]) for e in skipped) == sorted(
        [
            ("coinA", "4713-01-01 00:00:00 BC", "timestamp_out_of_range"),
            ("coinA", "-infinity", "timestamp_out_of_range"),
            ("badTime", "infinity", "timestamp_in_future"),
            ("coinB", "3000-01-01 00:00:00", "timestamp_in_future"),
        ]
    )
    assert all(e["row_id"] in bad_ids for e in skipped)
    assert restarts == {}
    assert status == 200, health
    assert health["checks"]["actors_down"] == []
    assert lag is not None and lag >= 0


async def api_predictions(service: Service, coin: str) -> list[dict[str, Any]]:
    status, body = await service_get(service, f"/api/predictions?coin_id={coin}&limit=100")
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def test_non_finite_huge_zero_and_negative_values_are_skipped_or_missing_never_fatal(
    quick: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """A price that is not a positive finite number makes its tick unusable (skipped with
    a reason); NaN, ±Infinity and numerics beyond double elsewhere are missing values,
    never an infinite feature that makes a model raise and fail its whole batch."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=200)
    try:
        models = await add_trained_models(conn, tmp_path, 801, FEATURES)
        with capture_logs() as logs:
            async with running_service(quick) as service:
                await wait_for(lambda: predictors_running(service) == len(models), what="models")
                before = intake_skips(await metrics_text(f"http://127.0.0.1:{service.web_port}"))
                first = await history(conn, ["coinA", "coinB", "coinC"], 30, start)
                await wait_for(lambda: predicted(conn, first, len(models)), what="first ticks")
                at = start + timedelta(seconds=160)
                bad_price = {
                    "zeroCoin": ("0", "price_not_positive"),
                    "negCoin": ("-0.5", "price_not_positive"),
                    "minusInfCoin": ("-Infinity", "price_not_positive"),
                    "nanCoin": ("NaN", "price_not_finite"),
                    "infCoin": ("Infinity", "price_not_finite"),
                    "hugeCoin": ("1e1000", "price_not_finite"),
                    "coinA": ("NaN", "price_not_finite"),  # inside coinA's history
                }
                rows: list[dict[str, str | None]] = [
                    {"mint": coin, "timestamp": at.isoformat(), "price_close": price}
                    for coin, (price, _) in bad_price.items()
                ]
                # coinB's tick: a usable price, a volume and a high beyond double.
                tick_b = coin_rows("coinB", 1, start=at, seed=5)[0]
                rows.append(as_text(tick_b) | {"volume_sol": "Infinity", "price_high": "1e1000"})
                # coinC's tick is good and shares the batch with all of them.
                tick_c = coin_rows("coinC", 1, start=at, seed=6)[0]
                rows.append(as_text(tick_c))
                bad_ids = await insert_raw(conn, rows)
                good = {"coinC": at}
                await wait_for(lambda: predicted(conn, good, len(models)), what="coinC's tick")
                later = await history(
                    conn, ["coinA", "coinB", "coinC"], 3, at + timedelta(seconds=5)
                )
                await wait_for(lambda: predicted(conn, later, len(models)), what="later ticks")
                await wait_for(lambda: cursor_reached(conn, max(bad_ids)), what="cursor")
                after = intake_skips(await metrics_text(f"http://127.0.0.1:{service.web_port}"))
                status, health = await service_get(service, "/health")
                restarts = dict(service.state.actor_restarts)
                later_a = await api_predictions(service, "coinA")
        stored = await conn.fetch("SELECT coin_id, data_timestamp, probability FROM predictions")
    finally:
        await conn.close()

    assert after - before == Counter({"price_not_positive": 3, "price_not_finite": 4})
    skipped = [e for e in logs if e["event"] == "tick_skipped" and "row_id" in e]
    assert sorted((e["coin_id"], e["reason"]) for e in skipped) == sorted(
        (coin, reason) for coin, (_, reason) in bad_price.items()
    )
    assert all(e["data_timestamp"].startswith(at.strftime("%Y-%m-%d %H:%M:%S")) for e in skipped)
    # No tick with a bad price was predicted; coinB's tick had a volume the models use
    # beyond double: missing for them, so skipped by each model, not the batch.
    predicted_coins = {(r["coin_id"], r["data_timestamp"]) for r in stored}
    assert not {c for c, _ in predicted_coins} & (set(bad_price) - {"coinA"})
    assert ("coinA", at) not in predicted_coins and ("coinB", at) not in predicted_coins
    assert all(0.0 <= r["probability"] <= 1.0 for r in stored)
    by_model = [e for e in logs if e["event"] == "tick_skipped" and "active_model_id" in e]
    assert sorted(e["active_model_id"] for e in by_model if e["coin_id"] == "coinB") == models
    assert {e["reason"] for e in by_model if e["coin_id"] == "coinB"} == {
        "NULL_in_a_base_column_the_model_uses"
    }
    assert {p["data_timestamp"] for p in later_a} >= {later["coinA"].isoformat()}
    assert restarts == {}
    assert status == 200, health


async def test_a_duplicated_row_is_predicted_and_evaluated_from_the_same_row(
    quick: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """The same (mint, timestamp) written twice with different prices: the row with the
    highest id is the row at that time, for the prediction's price and for the outcome."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(minutes=20)
    fast = quick.replace(evaluation_interval_seconds=0.2, evaluation_grace_seconds=0)
    try:
        models = await add_trained_models(conn, tmp_path, 901, FEATURES)
        async with running_service(fast) as service:
            await wait_for(lambda: predictors_running(service) == len(models), what="models")
            first = await history(conn, ["dupCoin"], 30, start)
            await wait_for(lambda: predicted(conn, first, len(models)), what="first ticks")
            at = first["dupCoin"] + timedelta(seconds=5)
            # The price 4 minutes later, written first (the evaluator may judge the
            # duplicate's prediction as soon as it exists): +50 % against the kept row,
            # +200 % against the other.
            [end] = coin_rows("dupCoin", 1, start=at + timedelta(minutes=4), seed=8)
            end["price_close"] = 3.0e-7
            await insert_rows(conn, [end])
            ended = {"dupCoin": end["timestamp"]}
            await wait_for(lambda: predicted(conn, ended, len(models)), what="the later tick")
            low, high = coin_rows("dupCoin", 2, start=at, step_seconds=0, seed=7)
            low["price_close"], high["price_close"] = 1.0e-7, 2.0e-7
            await insert_rows(conn, [low, high])  # one statement: ids in this order
            await wait_for(lambda: predicted(conn, {"dupCoin": at}, len(models)), what="dup tick")

            async def evaluated() -> list[dict[str, Any]]:
                items = await api_predictions(service, "dupCoin")
                mine = [p for p in items if p["data_timestamp"] == at.isoformat()]
                return mine if mine and all(p["status"] != "pending" for p in mine) else []

            judged = await wait_for(evaluated, timeout=20, what="the duplicate's evaluation")
    finally:
        await conn.close()

    assert len(judged) == len(models)
    for p in judged:
        assert p["price_close_at_t"] == pytest.approx(2.0e-7)
        assert p["actual_change_pct"] == pytest.approx(50.0)


async def test_rows_without_a_mint_or_a_timestamp_are_skipped_where_the_schema_allows_them(
    quick: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """The embedded table declares both NOT NULL; a collector's own table may not."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=200)
    try:
        await conn.execute("ALTER TABLE coin_metrics ALTER COLUMN mint DROP NOT NULL")
        await conn.execute('ALTER TABLE coin_metrics ALTER COLUMN "timestamp" DROP NOT NULL')
        models = await add_trained_models(conn, tmp_path, 1301, FEATURES)
        with capture_logs() as logs:
            async with running_service(quick) as service:
                await wait_for(lambda: predictors_running(service) == len(models), what="models")
                first = await history(conn, ["coinA"], 30, start)
                await wait_for(lambda: predicted(conn, first, len(models)), what="first ticks")
                at = start + timedelta(seconds=160)
                tick = as_text(coin_rows("coinA", 1, start=at, seed=9)[0])
                bad_ids = await insert_raw(
                    conn,
                    [
                        {"mint": None, "timestamp": at.isoformat(), "price_close": "1"},
                        tick,
                        {"mint": "coinA", "timestamp": None, "price_close": "1"},
                    ],
                )
                await wait_for(lambda: predicted(conn, {"coinA": at}, len(models)), what="tick")
                await wait_for(lambda: cursor_reached(conn, max(bad_ids)), what="cursor")
                restarts = dict(service.state.actor_restarts)
    finally:
        await conn.close()

    skipped = [e for e in logs if e["event"] == "tick_skipped" and "row_id" in e]
    assert sorted((e["row_id"], e["coin_id"], e["reason"]) for e in skipped) == [
        (bad_ids[0], None, "mint_missing"),
        (bad_ids[2], "coinA", "timestamp_missing"),
    ]
    assert restarts == {}
