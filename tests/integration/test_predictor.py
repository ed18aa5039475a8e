"""From a coin_metrics insert to stored predictions, with real models and the real service."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import polars as pl
import pytest
from coin_rows import COLUMNS, coin_rows, insert_rows
from intake_cursor import cursor_reached
from model_factory import train_model
from service_runner import predictors_running, running_service
from training_service_stub import TrainingServiceStub
from waiting import wait_for
from webhook_receiver import WebhookReceiver, insert_active_model

from features.columns import BASE_COLUMNS, normalise
from features.matrix import FeatureSpec
from storage.config import Settings
from storage.db.pool import connect
from storage.intake import coin_metrics
from storage.model_files.store import file_sha256, load_model
from storage.models.model_settings import notify_model_changed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Base columns, windowed features (5/10/15) and running ones (ATH, dev sold, age flags):
# a history window alone cannot produce the running ones, the prefix state must.
FEATURES = [
    "price_close",
    "volume_sol",
    "buy_pressure_ratio",
    "num_buys",
    "dev_sold_amount",
    "rolling_ath",
    "ath_distance_pct",
    "minutes_since_ath",
    "ath_is_recent",
    "dev_sold_cumsum",
    "price_roc_5",
    "price_roc_15",
    "volume_ratio_10",
    "whale_activity_15",
    "buy_pressure_ma_5",
    "volatility_ma_10",
    "price_roc_15_has_data",
]


def golden_rows(shift_to: datetime) -> list[dict[str, Any]]:
    """The golden coin_metrics fixture, moved in time so that its last row is `shift_to`."""
    frame = normalise(pl.read_csv(FIXTURES / "features" / "coin_metrics.csv"))
    offset = shift_to - frame["timestamp"].max()
    frame = frame.with_columns(pl.col("timestamp") + offset).sort("timestamp")
    return frame.select(COLUMNS).to_dicts()


async def add_model(
    conn: asyncpg.Connection, path: Path, kind: str, model_id: int, **columns: Any
) -> int:
    active_model_id = await insert_active_model(
        conn,
        model_id,
        model_type=kind,
        features=FEATURES,
        phases=None,
        params={"use_engineered_features": True, "feature_engineering_windows": [5, 10, 15]},
        file_path=str(path),
        file_sha256=file_sha256(path),
        **columns,
    )
    await notify_model_changed(conn, active_model_id, "imported")
    return active_model_id


async def expected_probability(
    conn: asyncpg.Connection, path: Path, coin: str, at: datetime
) -> float:
    """The model called directly on features computed over the coin's *whole* history."""
    history = await coin_metrics.load_history(conn, [coin], [at], 1_000_000, tuple(BASE_COLUMNS))
    spec = FeatureSpec.from_model(FEATURES)
    computed = spec.compute(history)
    row = computed.filter(pl.col("timestamp") == at).select(FEATURES).to_numpy()
    return float(load_model(path).predict_proba(row)[0, 1])


@pytest.fixture
def pipeline_settings(settings: Settings) -> Settings:
    # A short history window (2 x 15 + 1 rows) so coins outgrow it and running
    # features depend on the carried prefix state.
    return settings.replace(feature_history_size=31, batch_timeout_seconds=0.01)


async def test_every_active_model_predicts_each_tick_with_the_full_history_features(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    xgb = train_model("xgboost", FEATURES, seed=1, path=tmp_path / "xgb.pkl")
    forest = train_model("random_forest", FEATURES, seed=2, path=tmp_path / "rf.pkl")
    conn = await connect(db_dsn)
    try:
        ids = {
            await add_model(conn, xgb, "xgboost", 101): xgb,
            await add_model(conn, forest, "random_forest", 102): forest,
        }
        async with running_service(pipeline_settings) as service:
            await wait_for(
                lambda: predictors_running(service) == len(ids), what="a predictor per active model"
            )
            rows = golden_rows(datetime.now(UTC))
            # Small statements in time order, as a collector writes them.
            for start in range(0, len(rows), 25):
                await insert_rows(conn, rows[start : start + 25])
            last = {r["mint"]: r["timestamp"] for r in rows}
            await wait_for(
                lambda: _predicted(conn, last, len(ids)),
                timeout=30,
                what="a prediction of each model for each coin's last row",
            )
        stored = await conn.fetch(
            "SELECT * FROM predictions ORDER BY active_model_id, coin_id, data_timestamp"
        )
        assert stored, "no predictions"
        for p in stored:
            want = await expected_probability(
                conn, ids[p["active_model_id"]], p["coin_id"], p["data_timestamp"]
            )
            assert p["probability"] == pytest.approx(want, abs=1e-6), (
                f"model {p['active_model_id']} coin {p['coin_id']} at {p['data_timestamp']}"
            )
            assert p["prediction"] == int(want >= 0.5)
            assert p["tag"] == (
                "alert" if want >= 0.7 else "positive" if want >= 0.5 else "negative"
            )
            assert p["target_kind"] == "time_based" and p["future_minutes"] == 5
            assert (p["evaluation_due_at"] - p["data_timestamp"]).total_seconds() == 300
            close = await conn.fetchval(
                "SELECT price_close FROM coin_metrics WHERE mint = $1 AND timestamp = $2",
                p["coin_id"],
                p["data_timestamp"],
            )
            assert p["price_close_at_t"] == close  # the snapshot at T, zeros kept as zeros
            assert p["source"] == "stream"
        duplicates = await conn.fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM predictions
               GROUP BY active_model_id, coin_id, data_timestamp HAVING count(*) > 1) d"""
        )
        assert duplicates == 0
    finally:
        await conn.close()


async def test_each_coin_tick_reaches_n8n_as_one_post_carrying_every_model(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """CONTRACTS.md: one POST per URL and coin tick, with the predictions of all models."""
    xgb, forest = _two_model_files(tmp_path)
    conn = await connect(db_dsn)
    try:
        models = [
            await add_model(conn, xgb, "xgboost", 201, n8n_send_modes=["all"]),
            await add_model(conn, forest, "random_forest", 202, n8n_send_modes=["all"]),
            await add_model(conn, xgb, "xgboost", 203, n8n_send_modes=["all"]),
        ]
        configured = pipeline_settings.replace(n8n_webhook_url=receiver.url())
        async with running_service(configured) as service:
            await _predict_and_send_golden_rows(conn, service, len(models))
        predicted = await conn.fetchval(
            "SELECT count(DISTINCT (coin_id, data_timestamp)) FROM predictions"
        )
    finally:
        await conn.close()
    bodies = receiver.bodies()
    ticks = [(b["coin_id"], b["timestamp"]) for b in bodies]
    assert len(ticks) == len(set(ticks)) == predicted, "a coin tick was split or repeated"
    for body in bodies:
        carried = sorted(p["model"]["active_model_id"] for p in body["predictions"])
        assert carried == sorted(models), (body["coin_id"], body["timestamp"], carried)


async def test_a_batch_processed_again_sends_its_stored_predictions_once(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Webhook jobs are queued with the cursor move. Ticks read again (the cursor was
    not moved) whose jobs exist are not sent again; ticks whose predictions were
    committed but whose jobs were never queued (a stop in between) are sent once,
    with the stored values and every model."""
    xgb, forest = _two_model_files(tmp_path)
    conn = await connect(db_dsn)
    try:
        models = [
            await add_model(conn, xgb, "xgboost", 301, n8n_send_modes=["all"]),
            await add_model(conn, forest, "random_forest", 302, n8n_send_modes=["all"]),
        ]
        # Every row is re-read, however old (the golden coins end hours apart).
        configured = pipeline_settings.replace(
            n8n_webhook_url=receiver.url(),
            catchup_max_age_seconds=30 * 86400,
            webhook_retention_seconds=0,
            webhook_dead_retention_seconds=0,
        )
        async with running_service(configured) as service:
            last = await _predict_and_send_golden_rows(conn, service, len(models))
        first = len(receiver.bodies())
        top = await conn.fetchval("SELECT max(id) FROM coin_metrics")

        # Read everything again: every tick's job exists, nothing goes out twice.
        await conn.execute("UPDATE intake_cursor SET last_id = 0")
        async with running_service(configured):
            await wait_for(lambda: cursor_reached(conn, top), timeout=30, what="the re-read")
        assert len(receiver.bodies()) == first
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == first

        # As after a stop between the predictions' commit and the cursor move.
        await conn.execute("DELETE FROM webhook_outbox")
        await conn.execute("UPDATE intake_cursor SET last_id = 0")
        async with running_service(configured):
            await wait_for(lambda: cursor_reached(conn, top), timeout=30, what="the re-read")
            await wait_for(lambda: _outbox_settled(conn), timeout=30, what="the webhooks")
        stored = {
            (r["coin_id"], r["data_timestamp"], r["active_model_id"]): r["probability"]
            for r in await conn.fetch("SELECT * FROM predictions")
        }
    finally:
        await conn.close()
    again = receiver.bodies()[first:]
    ticks = [(b["coin_id"], b["timestamp"]) for b in again]
    assert len(ticks) == len(set(ticks)), "a tick was sent twice"
    sent = {(b["coin_id"], datetime.fromisoformat(b["timestamp"])): b for b in again}
    for coin, at in last.items():
        body = sent[(coin, at)]  # each coin's newest tick is processed in any batching
        carried = {p["model"]["active_model_id"]: p["probability"] for p in body["predictions"]}
        assert carried == {m: stored[(coin, at, m)] for m in models}


def _two_model_files(tmp_path: Path) -> tuple[Path, Path]:
    xgb = train_model("xgboost", FEATURES, seed=1, path=tmp_path / "xgb.pkl")
    forest = train_model("random_forest", FEATURES, seed=2, path=tmp_path / "rf.pkl")
    return xgb, forest


async def _predict_and_send_golden_rows(
    conn: asyncpg.Connection, service: Any, models: int
) -> dict[str, datetime]:
    """Insert the golden rows as a collector does; wait until every model predicted each
    coin's last row and every webhook was delivered. Returns each coin's last tick."""
    await wait_for(lambda: predictors_running(service) == models, what="a predictor per model")
    rows = golden_rows(datetime.now(UTC))
    for start in range(0, len(rows), 25):
        await insert_rows(conn, rows[start : start + 25])
    last = {r["mint"]: r["timestamp"] for r in rows}
    await wait_for(lambda: _predicted(conn, last, models), timeout=30, what="all predictions")
    await wait_for(lambda: _outbox_settled(conn), timeout=30, what="every webhook delivered")
    return last


async def _outbox_settled(conn: asyncpg.Connection) -> bool:
    pending = await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE status <> 'delivered'")
    total = await conn.fetchval("SELECT count(*) FROM webhook_outbox")
    return bool(total) and pending == 0


async def _predicted(conn: asyncpg.Connection, last: dict[str, datetime], models: int) -> bool:
    rows = await conn.fetch(
        "SELECT coin_id, data_timestamp, count(*) AS n FROM predictions "
        "GROUP BY coin_id, data_timestamp"
    )
    seen = {(r["coin_id"], r["data_timestamp"]): r["n"] for r in rows}
    # A tick predicted more than once fails at once, by name, not as a wait that never ends.
    twice = {key: n for key, n in seen.items() if n > models}
    assert not twice, f"ticks predicted more than once per model: {twice}"
    return all(seen.get((coin, at), 0) == models for coin, at in last.items())


async def test_model_lifecycle_through_the_api_without_losing_or_duplicating_ticks(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    hooks = await WebhookReceiver().start()
    try:
        await _lifecycle(pipeline_settings, db_dsn, hooks)
    finally:
        await hooks.stop()
    # One webhook per predicted coin tick, none twice (idempotency keys are unique).
    keys = [r.headers.get("Idempotency-Key") for r in hooks.received()]
    assert keys and len(keys) == len(set(keys))


async def _lifecycle(pipeline_settings: Settings, db_dsn: str, hooks: WebhookReceiver) -> None:
    async with TrainingServiceStub() as ts:
        ts.add_model(7, "xgboost", FEATURES, seed=1)
        settings = pipeline_settings.replace(
            training_service_api_url=ts.base_url, n8n_webhook_url=hooks.url()
        )
        conn = await connect(db_dsn)
        try:
            async with (
                running_service(settings) as service,
                aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
            ):
                async with http.post("/api/models/import", json={"model_id": 7}) as resp:
                    assert resp.status == 201, await resp.text()
                    active_id = (await resp.json())["id"]
                await wait_for(
                    lambda: predictors_running(service) == 1, what="the imported model running"
                )
                first_file = Path(
                    await conn.fetchval(
                        "SELECT file_path FROM active_models WHERE id=$1", active_id
                    )
                )

                # 1. A coin's rows -> one prediction for its newest tick, one webhook.
                a = await _insert_coin(conn, "coinA", 40)
                await wait_for(lambda: _has_prediction(conn, "coinA", a), what="coinA predicted")
                await wait_for(lambda: len(hooks.bodies()) >= 1, what="coinA webhook")
                p = await conn.fetchrow("SELECT * FROM predictions WHERE coin_id = 'coinA'")
                assert p["probability"] == pytest.approx(
                    await expected_probability(conn, first_file, "coinA", a), abs=1e-6
                )

                # 2. Deactivated: the next ticks get no prediction (they are still consumed).
                async with http.post(f"/api/models/{active_id}/deactivate") as resp:
                    assert resp.status == 200, await resp.text()
                await wait_for(lambda: predictors_running(service) == 0, what="predictor stop")
                b = await _insert_coin(conn, "coinB", 10)
                await wait_for(lambda: _cursor_past(conn, "coinB", b), what="coinB consumed")
                assert not await _has_prediction(conn, "coinB", b)

                # 3. Activated again: predictions resume.
                async with http.post(f"/api/models/{active_id}/activate") as resp:
                    assert resp.status == 200, await resp.text()
                await wait_for(lambda: predictors_running(service) == 1, what="predictor again")
                c = await _insert_coin(conn, "coinC", 40)
                await wait_for(lambda: _has_prediction(conn, "coinC", c), what="coinC predicted")

                # 4. The Training Service now serves a retrained file; reload picks it up.
                ts.add_model(7, "xgboost", FEATURES, seed=99)
                await anyio.Path(first_file).unlink()
                async with http.post(f"/api/models/{active_id}/reload") as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json())["reload"]["redownloaded"] is True
                new_sha = await conn.fetchval(
                    "SELECT file_sha256 FROM active_models WHERE id = $1", active_id
                )
                await wait_for(
                    lambda: (
                        service.supervisor.actor("model-sync").runtimes[active_id].model.sha256
                        == new_sha
                    ),
                    what="the new model swapped in",
                )
                new_file = Path(
                    await conn.fetchval(
                        "SELECT file_path FROM active_models WHERE id=$1", active_id
                    )
                )
                d = await _insert_coin(conn, "coinD", 40)
                await wait_for(lambda: _has_prediction(conn, "coinD", d), what="coinD predicted")
                got = await conn.fetchval(
                    "SELECT probability FROM predictions WHERE coin_id = 'coinD' "
                    "AND data_timestamp = $1",
                    d,
                )
                want_new = await expected_probability(conn, new_file, "coinD", d)
                assert got == pytest.approx(want_new, abs=1e-6)

                # 5. A manual prediction of an already predicted tick stores nothing new.
                async with http.post("/api/predict", json={"coin_id": "coinD"}) as resp:
                    assert resp.status == 200, await resp.text()
                    [manual] = (await resp.json())["predictions"]
                assert manual["stored"] is False and manual["probability"] == pytest.approx(got)
                async with http.post("/api/predict", json={"coin_id": "nope"}) as resp:
                    assert resp.status == 404
                    assert (await resp.json())["error"]["details"]["field"] == "coin_id"
        finally:
            dupes = await conn.fetchval(
                """SELECT count(*) FROM (SELECT 1 FROM predictions
                   GROUP BY active_model_id, coin_id, data_timestamp HAVING count(*) > 1) d"""
            )
            await conn.close()
    assert dupes == 0


async def _insert_coin(conn: asyncpg.Connection, mint: str, n: int) -> datetime:
    rows = coin_rows(mint, n, seed=len(mint) + ord(mint[-1]))
    await insert_rows(conn, rows)
    return rows[-1]["timestamp"]


async def _has_prediction(conn: asyncpg.Connection, coin: str, at: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE coin_id = $1 AND data_timestamp = $2",
            coin,
            at,
        )
    )


async def _cursor_past(conn: asyncpg.Connection, coin: str, at: datetime) -> bool:
    newest = await conn.fetchval(
        "SELECT max(id) FROM coin_metrics WHERE mint = $1 AND timestamp = $2", coin, at
    )
    return await cursor_reached(conn, newest)


async def test_a_model_file_lost_while_down_is_downloaded_again_at_start(
    pipeline_settings: Settings, db_dsn: str
) -> None:
    async with TrainingServiceStub() as ts:
        ts.add_model(8, "random_forest", FEATURES, seed=3)
        settings = pipeline_settings.replace(training_service_api_url=ts.base_url)
        conn = await connect(db_dsn)
        try:
            async with (
                running_service(settings) as service,
                aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
            ):
                async with http.post("/api/models/import", json={"model_id": 8}) as resp:
                    assert resp.status == 201, await resp.text()
            path = await conn.fetchval("SELECT file_path FROM active_models")
            await anyio.Path(path).unlink()
            async with running_service(settings) as service:
                await wait_for(
                    lambda: predictors_running(service) == 1, what="the predictor after repair"
                )
                at = await _insert_coin(conn, "coinR", 20)
                await wait_for(lambda: _has_prediction(conn, "coinR", at), what="a prediction")
            state = await conn.fetchval("SELECT file_state FROM active_models")
        finally:
            await conn.close()
    assert ts.downloads(8) == 2
    assert state == "redownloaded"


async def _insert_and_wait(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """One statement, then wait until the service has fully processed it."""
    ids = await insert_rows(conn, rows)
    await wait_for(lambda: cursor_reached(conn, max(ids)), what="the rows processed")


async def test_ignore_windows_and_open_caps_filter_later_ticks_of_a_coin(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    path = train_model("xgboost", FEATURES, seed=5, path=tmp_path / "m.pkl")
    conn = await connect(db_dsn)
    try:
        ignoring = await add_model(
            conn,
            path,
            "xgboost",
            201,
            ignore_negative_seconds=3600,
            ignore_positive_seconds=3600,
            ignore_alert_seconds=3600,
        )
        capped = await add_model(
            conn,
            path,
            "xgboost",
            202,
            max_open_negative=1,
            max_open_positive=1,
            max_open_alert=1,
        )
        free = await add_model(conn, path, "xgboost", 203)
        rows = coin_rows("coinI", 40, seed=9)
        async with running_service(pipeline_settings) as service:
            await wait_for(lambda: predictors_running(service) == 3, what="three predictors")
            await _insert_and_wait(conn, rows[:30])
            for row in rows[30:]:  # one tick per batch
                await _insert_and_wait(conn, [row])
        counts = {
            r["active_model_id"]: r["n"]
            for r in await conn.fetch(
                "SELECT active_model_id, count(*) AS n FROM predictions GROUP BY 1"
            )
        }
        tags = await conn.fetch(
            "SELECT tag, count(*) AS n FROM predictions WHERE active_model_id = $1 GROUP BY 1",
            capped,
        )
        skipped_state = await conn.fetchval(
            "SELECT ignore_until FROM coin_scan_state WHERE active_model_id = $1", ignoring
        )
    finally:
        await conn.close()
    assert counts[free] == 11  # the first batch's newest tick plus ten single ticks
    assert counts[ignoring] == 1  # every later tick falls in the hour after the first result
    assert skipped_state is not None
    assert all(t["n"] == 1 for t in tags)  # at most one open prediction per tag
    assert counts[capped] == len(tags) < counts[free]


async def test_capped_and_windowed_models_land_in_the_tick_row_written_once(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """Every model's result of a coin tick, capped and windowed ones included, is stored
    by the batch's one INSERT: no second write appends to the row (a new ~500 B row
    version per such model and tick; docs/prediction-store.md, trap 7)."""
    path = train_model("xgboost", FEATURES, seed=5, path=tmp_path / "m.pkl")
    conn = await connect(db_dsn)
    try:
        models = [
            await add_model(conn, path, "xgboost", 211, max_open_alert=5, max_open_positive=5),
            await add_model(conn, path, "xgboost", 212, ignore_negative_seconds=60),
            await add_model(conn, path, "xgboost", 213),
        ]
        coins = [f"coinR{i}" for i in range(4)]
        rows = [r for i, c in enumerate(coins) for r in coin_rows(c, 30, seed=20 + i)]
        async with running_service(pipeline_settings) as service:
            await wait_for(lambda: predictors_running(service) == 3, what="three predictors")
            await _insert_and_wait(conn, rows)
        ticks = await conn.fetch(
            "SELECT ctid::text AS ctid, cardinality(target_ids) AS n FROM prediction_ticks"
        )
        per_model = await conn.fetch(
            "SELECT active_model_id, count(*) AS n FROM predictions GROUP BY 1"
        )
    finally:
        await conn.close()
    assert {r["active_model_id"]: r["n"] for r in per_model} == dict.fromkeys(models, 4)
    assert sorted(r["n"] for r in ticks) == [3] * 4  # one row per coin tick, every model on it
    # A row rewritten leaves its old version behind and gets the next line pointer: the
    # four rows of an empty table are its first four tuples only if none was rewritten.
    assert sorted(r["ctid"] for r in ticks) == ["(0,1)", "(0,2)", "(0,3)", "(0,4)"]


async def test_a_tick_stored_under_an_ignore_window_is_sent_when_processed_again(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """A model with ignore windows records the window with its predictions.
    Read again after a stop before the job was queued, its ticks now fall in the window
    they recorded; they are still sent, once, with the stored values."""
    features = ["price_close", "volume_sol"]  # no windows: one row per coin is enough
    path = train_model("xgboost", features, seed=7, path=tmp_path / "m.pkl")
    configured = pipeline_settings.replace(n8n_webhook_url=receiver.url())
    conn = await connect(db_dsn)
    try:
        model = await insert_active_model(
            conn,
            501,
            model_type="xgboost",
            features=features,
            phases=None,
            file_path=str(path),
            file_sha256=file_sha256(path),
            n8n_send_modes=["all"],
            ignore_negative_seconds=86400,
            ignore_positive_seconds=86400,
            ignore_alert_seconds=86400,
        )
        await notify_model_changed(conn, model, "imported")
        before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM coin_metrics")
        rows = [coin_rows(f"coinW{i}", 1, seed=i)[0] for i in range(4)]
        async with running_service(configured) as service:
            await wait_for(lambda: predictors_running(service) == 1, what="the predictor")
            await insert_rows(conn, rows)
            last = {r["mint"]: r["timestamp"] for r in rows}
            await wait_for(lambda: _predicted(conn, last, 1), timeout=30, what="predictions")
            await wait_for(lambda: _outbox_settled(conn), timeout=30, what="the webhooks")
        first = len(receiver.bodies())
        top = await conn.fetchval("SELECT max(id) FROM coin_metrics")

        # As after a stop between the predictions' commit and the job's.
        await conn.execute("DELETE FROM webhook_outbox")
        await conn.execute("UPDATE intake_cursor SET last_id = $1", before)
        async with running_service(configured):
            await wait_for(lambda: cursor_reached(conn, top), timeout=30, what="the re-read")
            await wait_for(lambda: _outbox_settled(conn), timeout=30, what="the webhooks")
        stored = {
            (r["coin_id"], r["data_timestamp"]): r["probability"]
            for r in await conn.fetch("SELECT * FROM predictions")
        }
    finally:
        await conn.close()
    assert first == len(rows)
    again = receiver.bodies()[first:]
    sent = {
        (b["coin_id"], datetime.fromisoformat(b["timestamp"])): b["predictions"][0]["probability"]
        for b in again
    }
    assert len(again) == len(rows)
    assert sent == stored


async def test_database_connections_killed_while_ticks_flow_lose_and_duplicate_nothing(
    pipeline_settings: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Every connection of the service is terminated again and again while rows arrive
    (a failover, an admin's pg_terminate_backend): the stores retry, crashed actors
    restart, the batcher re-reads from its durable cursor. Every coin's newest tick is
    predicted by every model exactly once and reaches the webhook; a POST repeated
    after a lost acknowledgement carries the same Idempotency-Key and body."""
    xgb, forest = _two_model_files(tmp_path)
    configured = pipeline_settings.replace(
        n8n_webhook_url=receiver.url(),
        catchup_max_age_seconds=30 * 86400,
        webhook_retention_seconds=0,
        webhook_dead_retention_seconds=0,
    )
    conn = await connect(db_dsn)
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        models = [
            await add_model(conn, xgb, "xgboost", 601, n8n_send_modes=["all"]),
            await add_model(conn, forest, "random_forest", 602, n8n_send_modes=["all"]),
        ]
        rows = golden_rows(datetime.now(UTC))
        killed = 0
        async with running_service(configured) as service:
            await wait_for(
                lambda: predictors_running(service) == len(models), what="a predictor per model"
            )
            for start in range(0, len(rows), 25):
                await insert_rows(conn, rows[start : start + 25])
                if start % 75 == 0:
                    killed += await conn.fetchval(kill)
                    await anyio.sleep(0.05)
            last = {r["mint"]: r["timestamp"] for r in rows}
            await wait_for(
                lambda: _predicted(conn, last, len(models)), timeout=60, what="all predictions"
            )
            await wait_for(lambda: _outbox_settled(conn), timeout=60, what="the webhooks")
        duplicated = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM predictions"
            " GROUP BY active_model_id, coin_id, data_timestamp HAVING count(*) > 1) d"
        )
    finally:
        await conn.close()
    assert killed > 0
    assert duplicated == 0
    delivered = {
        (b["coin_id"], datetime.fromisoformat(b["timestamp"])): b for b in receiver.bodies()
    }
    for coin, at in last.items():
        body = delivered[(coin, at)]
        assert {p["model"]["active_model_id"] for p in body["predictions"]} == set(models)
    by_key: dict[str, list[Any]] = {}
    for request in receiver.received():
        # The same body but for when it was sent (metadata.sent_at, new on every POST).
        resent = {**request.body, "metadata": {**request.body["metadata"], "sent_at": None}}
        by_key.setdefault(request.headers["Idempotency-Key"], []).append(resent)
    assert all(all(b == bodies[0] for b in bodies) for bodies in by_key.values())
    ticks = [(b["coin_id"], b["timestamp"]) for bodies in by_key.values() for b in bodies[:1]]
    assert len(ticks) == len(set(ticks)), "one tick under two keys"
