"""API requests are counted by route template, method and status."""

from __future__ import annotations

import aiohttp
from service_runner import running_service

from storage.config import Settings


async def test_requests_are_counted_by_route_template_not_by_raw_path(settings: Settings) -> None:
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        for _ in range(2):
            async with http.get("/api/models/987654") as resp:
                assert resp.status == 404
        async with http.get("/metrics") as resp:
            text = await resp.text()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("pp_http_requests_total") and 'route="/api/models/{id}"' in line
    ]
    assert lines, "no pp_http_requests_total sample for the model route"
    assert any('status="404"' in line and line.endswith(" 2") for line in lines), lines
    assert "987654" not in text  # ids never become label values
