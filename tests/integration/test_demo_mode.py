"""`serve` on the embedded database shows the whole pipeline: demo coins, models, alerts."""

from __future__ import annotations

import aiohttp
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import WebhookReceiver

from actors.app.service import ServiceOptions
from storage.config import Settings


async def test_demo_mode_imports_both_models_predicts_and_delivers_webhooks(
    settings: Settings,
) -> None:
    """The default demo sends alerts to its own stand-in n8n."""
    async with running_service(settings, ServiceOptions(demo=True)) as service:
        demo = service.supervisor.actor("demo")
        base = f"http://127.0.0.1:{service.web_port}"
        async with aiohttp.ClientSession(base) as http:

            async def stats() -> dict[str, object] | None:
                async with http.get("/api/stats") as resp:
                    body: dict[str, object] = await resp.json()
                ready = body["predictions_total"] and body["outbox_delivered"]
                return body if ready and len(demo.imported) == 2 else None

            body = await wait_for(stats, timeout=90, interval=0.5, what="demo predictions")
            async with http.get("/api/models") as resp:
                models = (await resp.json())["models"]
            async with http.get("/") as resp:
                page = await resp.text()
        assert body["demo"] is True
        assert {m["model_type"] for m in models} == {"xgboost", "random_forest"}
        assert all(m["is_active"] for m in models)
        assert demo.sink.received >= 1, "no demo webhook arrived"
        assert demo.sink.last[0]["metadata"]["service"] == "pump-predictor"
        assert "DEMO DATA" in page


async def test_demo_shows_predictions_of_both_models_webhooks_and_an_outcome(
    settings: Settings,
) -> None:
    """Within a bounded time: both models predict, n8n (here: the test) gets the alerts,
    and the evaluator judges a prediction (the demo XGBoost looks 1 minute ahead)."""
    receiver = await WebhookReceiver().start()
    try:
        configured = settings.replace(
            n8n_webhook_url=receiver.url(),
            evaluation_grace_seconds=1,
            evaluation_interval_seconds=1,
        )
        async with running_service(configured, ServiceOptions(demo=True)) as service:
            base = f"http://127.0.0.1:{service.web_port}"
            async with aiohttp.ClientSession(base) as http:

                async def statistics() -> dict[str, object]:
                    async with http.get("/api/alerts/statistics") as resp:
                        body: dict[str, object] = await resp.json()
                    return body

                async def total(result: str) -> int:
                    query = f"/api/predictions?evaluation_result={result}&limit=1"
                    async with http.get(query) as resp:
                        count: int = (await resp.json())["total"]
                    return count

                async def outcome() -> tuple[dict[str, object], int, int] | None:
                    """Statistics and the listed outcomes of one moment: the evaluator keeps
                    running, so the counts are taken between two equal statistics reads."""
                    body = await statistics()
                    models = {m["active_model_id"]: m for m in body["models"]}  # type: ignore[attr-defined]
                    both = len(models) == 2 and all(m["total"] for m in models.values())
                    if not (both and body["evaluated"]):
                        return None
                    success, failed = await total("success"), await total("failed")
                    again = await statistics()
                    if again["evaluated"] != body["evaluated"]:
                        return None
                    return body, success, failed

                stats, success, failed = await wait_for(
                    outcome, timeout=150, interval=1, what="an outcome"
                )
    finally:
        await receiver.stop()
    assert stats["evaluated"] == success + failed + stats["not_applicable"]
    bodies = receiver.bodies()
    assert bodies, "no webhook reached the receiver"
    sent = {p["model"]["id"] for b in bodies for p in b["predictions"]}
    assert sent == {1, 2}, f"webhooks carried models {sent}"
