"""API requests are counted by route template, method and status."""

from __future__ import annotations

import aiohttp
from metrics_reader import metrics_text, sample_value
from service_runner import running_service

from storage.config import Settings


async def _count(http: aiohttp.ClientSession, route: str, status: str) -> float:
    """The counter for one series (the registry is per process: earlier tests count too)."""
    text = await metrics_text(http)
    assert "987654" not in text  # ids never become label values
    return sample_value(text, "pp_http_requests_total", route=route, status=status, method="GET")


async def test_requests_are_counted_by_route_template_not_by_raw_path(settings: Settings) -> None:
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        before = await _count(http, "/api/models/{id}", "404")
        for _ in range(2):
            async with http.get("/api/models/987654") as resp:
                assert resp.status == 404
        after = await _count(http, "/api/models/{id}", "404")
    assert after - before == 2
