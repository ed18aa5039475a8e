"""`serve` on the embedded database shows the whole pipeline: demo coins, models, alerts."""

from __future__ import annotations

import aiohttp
from service_runner import running_service
from waiting import wait_for

from actors.service import ServiceOptions
from storage.config import Settings


async def test_demo_mode_imports_both_models_predicts_and_delivers_webhooks(
    settings: Settings,
) -> None:
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
