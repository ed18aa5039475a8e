"""Fixtures of the browser tests: the real service in demo mode, its dashboard, and
headless Chromium driving it. Test modules import them by name (a conftest.py here
would take the module name `conftest` from tests/conftest.py, which tests import).

One service per module (the demo needs seconds to train and import its models,
far longer than any page visit), started on a thread of its own: Selenium
blocks, and the service's event loop must keep serving while it does.
Screenshots go to `SCREENSHOT_DIR` (default: a fresh folder under the pytest
temp dir); the folder is printed when the first test needs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from browser_service import RunningDemo, browser_settings
from dashboard_browser import DashboardBrowser
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from service_runner import running_service
from waiting import wait_for

from actors.app.service import ServiceOptions

BROWSER_TIMEZONE = "Asia/Kathmandu"

__all__ = ["browser", "chrome", "database_dsn", "demo", "screenshot_dir"]

INSTALL_HINT = (
    "The browser tests need Chromium and its WebDriver: as root, "
    "`apt-get install chromium chromium-driver` (./scripts/test does this when run as root)."
)


@pytest.fixture(scope="session")
def screenshot_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    configured = os.environ.get("SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def database_dsn(pg_cluster: Any) -> Iterator[str]:
    name = anyio.run(pg_cluster.create_database)
    try:
        yield pg_cluster.dsn(name)
    finally:
        anyio.run(pg_cluster.drop_database, name)


@pytest.fixture(scope="module")
def demo(database_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """`serve` with the demo and the dashboard, once the demo has predictions to show."""
    settings = browser_settings(database_dsn, tmp_path_factory.mktemp("demo"))
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            running_service(settings, ServiceOptions(demo=True, dashboard=True))
        ) as service,
    ):
        api_url = f"http://127.0.0.1:{service.web_port}"
        running = RunningDemo(
            service, portal, api_url, f"http://127.0.0.1:{settings.streamlit_port}"
        )
        portal.call(_demo_predicting, api_url)
        portal.call(service.supervisor.actor("dashboard").wait_ready)
        yield running


async def _demo_predicting(api_url: str) -> None:
    async with aiohttp.ClientSession(api_url) as http:

        async def ready() -> bool:
            async with http.get("/api/stats") as resp:
                body = await resp.json()
            async with http.get("/api/models") as resp:
                models = (await resp.json())["models"]
            return bool(body["predictions_total"]) and len(models) == 2

        await wait_for(ready, timeout=90, interval=0.3, what="demo models predicting")


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail(INSTALL_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=ChromeService(driver_path))
    # A browser far from UTC (+05:45): a chart drawn in the browser's zone shows it.
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": BROWSER_TIMEZONE})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chrome: webdriver.Chrome, screenshot_dir: Path) -> DashboardBrowser:
    return DashboardBrowser(chrome, screenshot_dir)
