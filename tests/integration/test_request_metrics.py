"""API requests are counted by route template, method and status."""

from __future__ import annotations

import re

import aiohttp
from service_runner import running_service

from storage.config import Settings

# Greedy: route templates contain braces themselves ("/api/models/{id}").
SERIES = re.compile(r"^pp_http_requests_total\{(?P<labels>.*)\} (?P<value>\S+)$")


async def _count(http: aiohttp.ClientSession, route: str, status: str) -> float:
    """The counter for one series (the registry is per process: earlier tests count too)."""
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert "987654" not in text  # ids never become label values
    for line in text.splitlines():
        match = SERIES.match(line)
        if match is None:
            continue
        labels = match["labels"]
        if f'route="{route}"' in labels and f'status="{status}"' in labels and "GET" in labels:
            return float(match["value"])
    return 0.0


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
