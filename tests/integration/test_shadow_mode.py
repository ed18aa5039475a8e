"""Shadow mode: predicted and stored like any model, never sent; promoted in one action;
models compared on the ticks they share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from coin_rows import coin_rows, insert_rows
from prediction_rows import add_metric, add_model, add_prediction, serve_api, set_outcome
from service_runner import running_service
from training_service_stub import TrainingServiceStub
from waiting import wait_for
from webhook_receiver import WebhookReceiver

from storage.config import Settings
from storage.db.pool import connect
from storage.models.model_mode import set_mode

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]


async def _predicted(conn: asyncpg.Connection, coin: str, models: int) -> bool:
    n = await conn.fetchval(
        "SELECT count(DISTINCT active_model_id) FROM predictions WHERE coin_id = $1", coin
    )
    return bool(n == models)


def _sent_models(receiver: WebhookReceiver, coin: str) -> set[int]:
    return {
        p["model"]["active_model_id"]
        for body in receiver.bodies()
        if body["coin_id"] == coin
        for p in body["predictions"]
    }


async def test_a_shadow_model_is_predicted_but_never_sent_until_promoted(
    settings: Settings, db_dsn: str, receiver: WebhookReceiver
) -> None:
    async with TrainingServiceStub() as ts:
        ts.add_model(7, "xgboost", FEATURES, phases=None)
        ts.add_model(8, "random_forest", FEATURES, phases=None)
        settings = settings.replace(
            training_service_api_url=ts.base_url, n8n_webhook_url=receiver.url()
        )
        conn = await connect(db_dsn)
        try:
            async with (
                running_service(settings) as service,
                aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
            ):
                ids = []
                for model_id in (7, 8):
                    async with http.post("/api/models/import", json={"model_id": model_id}) as r:
                        assert r.status == 201, await r.text()
                        ids.append((await r.json())["id"])
                live, shadow = ids
                async with http.patch(f"/api/models/{shadow}/mode", json={"mode": "x"}) as r:
                    assert r.status == 422
                    assert (await r.json())["error"]["details"]["field"] == "mode"
                async with http.patch(f"/api/models/{shadow}/mode", json={"mode": "shadow"}) as r:
                    assert r.status == 200, await r.text()
                async with http.get(f"/api/models/{shadow}") as r:
                    assert (await r.json())["mode"] == "shadow"

                now = datetime.now(UTC)
                await insert_rows(conn, coin_rows("coinS", 20, start=now - timedelta(minutes=2)))
                await wait_for(lambda: _predicted(conn, "coinS", 2), what="both models predict")
                await wait_for(
                    lambda: _sent_models(receiver, "coinS") == {live},
                    what="the live model's webhook",
                )

                async with http.post(f"/api/models/{shadow}/promote") as r:
                    assert r.status == 200
                    assert (await r.json())["previous_mode"] == "shadow"
                async with http.get(f"/api/models/{shadow}") as r:
                    assert (await r.json())["mode"] == "live"
                await insert_rows(conn, coin_rows("coinP", 20, start=now - timedelta(minutes=1)))
                await wait_for(
                    lambda: _sent_models(receiver, "coinP") == {live, shadow},
                    what="both models' webhooks after the promotion",
                )
        finally:
            await conn.close()
    # Stored and sent for the live model only while the other was in shadow.
    assert _sent_models(receiver, "coinS") == {live}


async def test_compare_sets_models_side_by_side_on_the_ticks_they_share(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with pool.acquire() as conn:
        a = await add_model(conn, 31, name="A")
        b = await add_model(conn, 32, name="B")
        # (coin, a: p, outcome, b: p or None (not predicted), outcome)
        rows = [
            ("c1", 0.9, "success", 0.8, "success"),  # both alert, both right
            ("c2", 0.9, "failed", 0.2, "success"),  # A alerts wrongly, B agrees with outcome
            ("c3", 0.3, "success", 0.3, "success"),  # neither alerts
            ("c4", 0.9, "success", None, None),  # only A predicted: not shared
        ]
        for i, (coin, pa, ra, pb, rb) in enumerate(rows):
            at = t0 + timedelta(seconds=i)
            pid = await add_prediction(conn, a, coin, at, prediction=int(pa >= 0.5), probability=pa)
            # The tick's price path, which both models share: up 12 % reaches the 10 %
            # target, up 1 % does not.
            rose = (pa >= 0.5) == (ra == "success")
            await set_outcome(conn, pid, ra, change=12.0 if rose else 1.0)
            if pb is not None:
                pid = await add_prediction(
                    conn, b, coin, at, prediction=int(pb >= 0.5), probability=pb
                )
                await set_outcome(conn, pid, rb, change=12.0 if rose else 1.0)
    async with serve_api(settings, pool) as api:
        status, body = await api.get(f"/api/models/compare?ids={a},{b}")
        assert status == 200, body
        (pair,) = body["pairs"]
        assert pair["shared_ticks"] == 3
        assert pair["agreement"] == 2 / 3  # c1 both alert, c3 neither; c2 differs
        assert pair["both_alerted"] == 1
        assert pair["a"] == {"judged": 3, "alerts": 2, "precision": 0.5, "recall": 1.0}
        assert pair["b"] == {"judged": 3, "alerts": 1, "precision": 1.0, "recall": 1.0}
        status, body = await api.get(f"/api/models/compare?ids={a}")
        assert status == 400 and body["error"]["details"]["field"] == "ids"


async def test_a_shadow_models_predictions_are_marked_shadow_in_lists_and_coin_details(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A trader reading the list must not mistake a shadow prediction for one that was
    sent: every listing carries the model's mode, and it follows a promotion."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with pool.acquire() as conn:
        live = await add_model(conn, 41, name="Live")
        shadow = await add_model(conn, 42, name="Shadow")
        assert await set_mode(conn, shadow, "shadow") == "live"
        for model in (live, shadow):
            await add_metric(conn, "coinM", t0, 1.0)
            await add_prediction(conn, model, "coinM", t0, prediction=1, probability=0.9)
    async with serve_api(settings, pool) as api:
        status, body = await api.get("/api/predictions?coin_id=coinM")
        assert status == 200, body
        assert {i["active_model_id"]: i["model_mode"] for i in body["items"]} == {
            live: "live",
            shadow: "shadow",
        }
        status, body = await api.get("/api/predictions/latest/coinM")
        assert status == 200, body
        assert {p["active_model_id"]: p["model_mode"] for p in body["predictions"]} == {
            live: "live",
            shadow: "shadow",
        }
        status, body = await api.get(f"/api/models/{shadow}/coins/coinM/details")
        assert status == 200, body
        assert body["model_mode"] == "shadow"
        assert {p["model_mode"] for p in body["predictions"]} == {"shadow"}
        async with pool.acquire() as conn:
            await set_mode(conn, shadow, "live")
        status, body = await api.get(f"/api/predictions?active_model_id={shadow}")
        assert [i["model_mode"] for i in body["items"]] == ["live"]
