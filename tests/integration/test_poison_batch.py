"""A coin tick the database refuses every time is skipped; the rest of its batch is stored.

The real service, real models, real PostgreSQL: a trigger added by the test makes the
database refuse the predictions of one coin, permanently (check_violation) or a few
times only (serialization_failure, which is retried).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from coin_rows import coin_rows, insert_rows
from intake_cursor import cursor_reached
from metrics_reader import metrics_text, sample_value
from service_runner import predictors_running, running_service, service_get
from structlog.testing import capture_logs
from waiting import wait_for
from webhook_receiver import WebhookReceiver, add_trained_models

from actors.app.service import Service
from storage.config import Settings
from storage.db.pool import connect

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]
GOOD = ["coinA", "coinB", "coinC"]


async def _refuse(conn: asyncpg.Connection, coin: str, errcode: str, times: int | None) -> None:
    """The database refuses every prediction of `coin` with `errcode` (its coin tick rows,
    written or appended to): always, or only its first `times` writes (a sequence counts
    them: nextval survives the rollback)."""
    await conn.execute("CREATE SEQUENCE refusals")
    limit = "true" if times is None else f"nextval('refusals') <= {int(times)}"
    await conn.execute(
        f"""
        CREATE FUNCTION refuse_prediction() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {limit} THEN
                RAISE EXCEPTION 'prediction of % refused by the test', NEW.coin_id
                    USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    await conn.execute(
        f"""
        CREATE TRIGGER refuse_prediction BEFORE INSERT OR UPDATE ON prediction_ticks
        FOR EACH ROW WHEN (NEW.coin_id = '{coin}') EXECUTE FUNCTION refuse_prediction()
        """
    )


async def _insert_batch(conn: asyncpg.Connection, coins: list[str], n: int) -> dict[str, Any]:
    """`n` rows per coin in ONE statement (one page, so one batch holds every coin's newest
    tick), interleaved in time; returns per coin its newest (timestamp, row id)."""
    rows = [r for i, coin in enumerate(coins) for r in coin_rows(coin, n, seed=i + 1)]
    rows.sort(key=lambda r: r["timestamp"])
    ids = await insert_rows(conn, rows)
    return {r["mint"]: (r["timestamp"], row_id) for r, row_id in zip(rows, ids, strict=True)}


async def _next_tick(conn: asyncpg.Connection, coin: str, after: datetime) -> datetime:
    [row] = coin_rows(coin, 1, start=after + timedelta(seconds=5), seed=99)
    await insert_rows(conn, [row])
    at: datetime = row["timestamp"]
    return at


async def _predictions(conn: asyncpg.Connection) -> Counter[tuple[str, datetime, int]]:
    rows = await conn.fetch("SELECT coin_id, data_timestamp, active_model_id FROM predictions")
    return Counter((r[0], r[1], r[2]) for r in rows)


async def _predicted(conn: asyncpg.Connection, ticks: dict[str, datetime], models: int) -> bool:
    seen = Counter((coin, at) for coin, at, _ in await _predictions(conn))
    return all(seen[(coin, at)] == models for coin, at in ticks.items())


async def _delivered(conn: asyncpg.Connection, count: int) -> bool:
    rows = await conn.fetch("SELECT status FROM webhook_outbox")
    return len(rows) >= count and all(r["status"] == "delivered" for r in rows)


def _skipped(text: str, model: int, reason: str) -> float:
    """pp_ticks_skipped_total of the model and reason in a /metrics text (0 if absent).
    The metrics outlive a test's database, whose model ids start at 1 again: tests
    compare the value before and after."""
    return sample_value(text, "pp_ticks_skipped_total", model=str(model), reason=reason)


@pytest.fixture
def quick(settings: Settings, receiver: WebhookReceiver) -> Settings:
    return settings.replace(batch_timeout_seconds=0.01, n8n_webhook_url=receiver.url())


async def _good_ticks_stored_and_sent(
    conn: asyncpg.Connection, service: Service, models: list[int]
) -> tuple[dict[str, Any], dict[str, datetime], str]:
    """Insert the good coins and the refused one in one statement; wait until every good
    tick is predicted by every model and sent. Returns the newest (timestamp, id) per
    coin, the good ticks, and /metrics as it was before the insert."""
    await wait_for(lambda: predictors_running(service) == len(models), what="the predictors")
    before = await metrics_text(f"http://127.0.0.1:{service.web_port}")
    newest = await _insert_batch(conn, [*GOOD, "poison"], 40)
    good = {coin: newest[coin][0] for coin in GOOD}
    await wait_for(
        lambda: _predicted(conn, good, len(models)),
        timeout=20,
        what="every model's prediction of each good coin's newest tick",
    )
    await wait_for(lambda: _delivered(conn, len(GOOD)), what="their webhooks")
    return newest, good, before


async def test_a_tick_the_database_always_refuses_is_skipped_and_its_batch_mates_are_stored(
    quick: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    conn = await connect(db_dsn)
    try:
        models = await add_trained_models(conn, tmp_path, 501, FEATURES, n8n_send_modes=["all"])
        await _refuse(conn, "poison", "check_violation", times=None)
        with capture_logs() as logs:
            async with running_service(quick) as service:
                newest, good, before = await _good_ticks_stored_and_sent(conn, service, models)
                # The cursor moved past the refused tick, and later rows are processed.
                await wait_for(
                    lambda: cursor_reached(conn, newest["poison"][1]), what="cursor moved"
                )
                later = {"coinA": await _next_tick(conn, "coinA", newest["coinA"][0])}
                await wait_for(lambda: _predicted(conn, later, len(models)), what="a later tick")
                await wait_for(lambda: _delivered(conn, len(GOOD) + 1), what="its webhook")
                exported = await metrics_text(f"http://127.0.0.1:{service.web_port}")
                checks = (await service_get(service, "/health"))[1]["checks"]
                restarts = dict(service.state.actor_restarts)
        stored = await _predictions(conn)
    finally:
        await conn.close()

    # Every good tick once per model, nothing of the refused coin.
    expected = set(good.items()) | set(later.items())
    assert set(stored) == {(coin, at, m) for coin, at in expected for m in models}
    assert set(stored.values()) == {1}
    # One POST per good tick, carrying every model; none for the refused coin.
    bodies = receiver.bodies()
    sent = Counter((b["coin_id"], datetime.fromisoformat(b["timestamp"])) for b in bodies)
    assert sent == Counter(expected)
    assert all(
        sorted(p["model"]["active_model_id"] for p in b["predictions"]) == models for b in bodies
    )
    # The skip is counted per model with its reason, and named in the log.
    for model in models:
        assert (
            _skipped(exported, model, "store_failed") == _skipped(before, model, "store_failed") + 1
        )
    [skipped] = [e for e in logs if e["event"] == "tick_store_failed"]
    assert skipped["coin_id"] == "poison"
    assert skipped["data_timestamp"] == newest["poison"][0].isoformat()
    assert sorted(skipped["models"]) == models
    assert "refused by the test" in skipped["error"] and skipped["sqlstate"] == "23514"
    assert skipped["reason"] == "store_failed"
    # The refused tick shared its batch with every good coin's newest tick.
    refusals = [e for e in logs if e["event"] == "batch_store_refused"]
    assert any(e["batch_id"] == skipped["batch_id"] and e["ticks"] == 4 for e in refusals)
    assert checks["ticks_store_failed"] >= 1 and "poison" in checks["last_store_failure"]
    # Isolated inside the batcher: it never crashed over the refused tick.
    assert restarts.get("batcher", 0) == 0


async def test_capped_models_skip_only_the_refused_tick(
    quick: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """A cap is applied in the batch's storing transaction (it reads the model's open
    predictions there): the refused tick is isolated there like any model's."""
    conn = await connect(db_dsn)
    try:
        models = await add_trained_models(
            conn, tmp_path, 601, FEATURES, n8n_send_modes=["all"], max_open_alert=1000
        )
        await _refuse(conn, "poison", "check_violation", times=None)
        with capture_logs() as logs:
            async with running_service(quick) as service:
                _, good, before = await _good_ticks_stored_and_sent(conn, service, models)
                exported = await metrics_text(f"http://127.0.0.1:{service.web_port}")
                checks = (await service_get(service, "/health"))[1]["checks"]
        stored = await _predictions(conn)
    finally:
        await conn.close()

    assert set(stored) == {(coin, at, m) for coin, at in good.items() for m in models}
    assert set(stored.values()) == {1}
    bodies = receiver.bodies()
    assert Counter(b["coin_id"] for b in bodies) == Counter(GOOD)
    assert all(len(b["predictions"]) == len(models) for b in bodies)
    for model in models:
        assert (
            _skipped(exported, model, "store_failed") == _skipped(before, model, "store_failed") + 1
        )
        assert _skipped(exported, model, "batch_failed") == _skipped(before, model, "batch_failed")
    [refused] = [e for e in logs if e["event"] == "tick_store_failed"]
    assert sorted(refused["models"]) == models
    assert refused["coin_id"] == "poison" and refused["sqlstate"] == "23514"
    assert checks["ticks_store_failed"] == 1
    assert "poison" in checks["last_store_failure"]


@pytest.mark.parametrize(
    ("refusals", "restarts"),
    [(2, 0), (4, 1)],
    ids=["retried_in_place", "batcher_restarts_and_reads_again"],
)
async def test_a_transient_refusal_is_retried_and_nothing_is_skipped(
    quick: Settings,
    db_dsn: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
    refusals: int,
    restarts: int,
) -> None:
    """serialization_failure is transient: the transaction is tried again (3 attempts),
    then the batcher restarts and reads the batch again; no tick is skipped."""
    conn = await connect(db_dsn)
    try:
        models = await add_trained_models(
            conn, tmp_path, 600 + 10 * refusals, FEATURES, n8n_send_modes=["all"]
        )
        await _refuse(conn, "flaky", "serialization_failure", times=refusals)
        async with running_service(quick) as service:
            await wait_for(
                lambda: predictors_running(service) == len(models), what="the predictors"
            )
            before = await metrics_text(f"http://127.0.0.1:{service.web_port}")
            newest = await _insert_batch(conn, [*GOOD, "flaky"], 40)
            ticks = {coin: at for coin, (at, _) in newest.items()}
            await wait_for(
                lambda: _predicted(conn, ticks, len(models)),
                timeout=20,
                what="every model's prediction of each coin's newest tick",
            )
            await wait_for(lambda: _delivered(conn, len(ticks)), what="their webhooks")
            exported = await metrics_text(f"http://127.0.0.1:{service.web_port}")
            restarted = service.state.actor_restarts.get("batcher", 0)
        stored = await _predictions(conn)
        tries = await conn.fetchval("SELECT last_value FROM refusals")
    finally:
        await conn.close()
    assert set(stored) == {(coin, at, m) for coin, at in ticks.items() for m in models}
    assert set(stored.values()) == {1}
    sent = Counter(b["coin_id"] for b in receiver.bodies())
    assert sent == Counter([*GOOD, "flaky"])
    assert tries > refusals  # refused that often, then stored
    assert restarted == restarts
    for model in models:
        assert _skipped(exported, model, "store_failed") == _skipped(before, model, "store_failed")
