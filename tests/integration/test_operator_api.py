"""What an operator reads from the running service: versions, links, API pages."""

from __future__ import annotations

import re

import aiohttp
import anyio
from anyio.abc import TaskStatus
from service_runner import running_service

from actors.runtime.supervisor import ActorSpec
from storage.config import Settings
from storage.models.library_versions import library_versions


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


async def test_api_links_and_an_interactive_page_served_without_a_cdn(settings: Settings) -> None:
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        async with http.get("/api") as resp:
            assert resp.status == 200
            links = (await resp.json())["links"]
        assert links["docs"] == "/api/docs" and links["openapi"] == "/api/openapi.json"
        for link in ("/api/docs", links["openapi"], links["health"], links["status_page"]):
            async with http.get(link) as resp:
                assert resp.status == 200, link
        async with http.get("/api/docs") as resp:
            page = await resp.text()
            assert resp.content_type == "text/html"
        # Every script and style sheet comes from this service, none from elsewhere.
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sources and all(s.startswith("/api/docs/") for s in sources), sources
        for source in sources:
            async with http.get(source) as resp:
                assert resp.status == 200, source
                assert len(await resp.read()) > 100, source
        async with http.get("/api/docs/init.js") as resp:
            assert "/api/openapi.json" in await resp.text()


async def test_status_page_links_the_dashboard_when_it_runs(settings: Settings) -> None:
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        async with http.get("/") as resp:
            without = await resp.text()
        assert "Dashboard</a>" not in without and 'href="/api/docs"' in without
        # The dashboard actor as the supervisor would run it (a child process of its own
        # is not needed to see the link: the page asks the supervisor what runs).
        await service.supervisor.spawn(ActorSpec("dashboard", _Idle))
        async with http.get("/") as resp:
            page = await resp.text()
        assert f'href="http://127.0.0.1:{settings.streamlit_port}/">Dashboard</a>' in page


class _Idle:
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()
