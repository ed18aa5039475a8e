"""What an operator reads from the running service: versions, links, API pages."""

from __future__ import annotations

import aiohttp
from service_runner import running_service

from storage.config import Settings
from storage.library_versions import library_versions


async def test_health_and_config_report_the_model_library_versions(settings: Settings) -> None:
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        async with http.get("/health") as resp:
            health = await resp.json()
        async with http.get("/api/config") as resp:
            config = await resp.json()
    expected = library_versions()
    assert set(expected) == {"scikit-learn", "xgboost", "polars"}
    assert all(expected.values())
    assert health["libraries"] == expected
    assert config["libraries"] == expected
