"""With API_TOKEN set, the dashboard shows nothing before the user gives the token,
and the dashboard process itself holds no token and listens on loopback only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from anyio.from_thread import start_blocking_portal
from browser_fixtures import *  # noqa: F403 (the fixtures)
from browser_service import RunningDemo, browser_settings
from dashboard_browser import DashboardBrowser
from service_runner import running_service

from actors.app.service import ServiceOptions

TOKEN = "browser-test-token-5e1f"


@pytest.fixture(scope="module")
def guarded(database_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """The service with a token and no public reads; the token is also in the service's
    environment, as an operator would pass it (the dashboard child must not inherit it)."""
    settings = browser_settings(
        database_dsn,
        tmp_path_factory.mktemp("guarded"),
        api_token=TOKEN,
        api_public_reads=False,
    )
    previous = os.environ.get("API_TOKEN")
    os.environ["API_TOKEN"] = TOKEN
    try:
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                running_service(settings, ServiceOptions(dashboard=True))
            ) as service,
        ):
            dashboard = service.supervisor.actor("dashboard")
            portal.call(dashboard.wait_ready)
            yield RunningDemo(
                service,
                portal,
                f"http://127.0.0.1:{service.web_port}",
                f"http://127.0.0.1:{settings.streamlit_port}",
            )
    finally:
        if previous is None:
            os.environ.pop("API_TOKEN", None)
        else:
            os.environ["API_TOKEN"] = previous


def test_the_dashboard_asks_for_the_token_before_showing_anything(
    guarded: RunningDemo, browser: DashboardBrowser
) -> None:
    browser.open(guarded.dashboard_url)
    browser.shows("Sign in")
    seen = browser.text()
    assert "Overview" not in seen and "Predictions" not in seen, seen
    browser.screenshot("sign_in")

    browser.type_into("API token", "not-the-token")
    browser.click("Sign in")
    browser.shows("The API did not accept this token.")
    assert "Overview" not in browser.text()

    browser.type_into("API token", TOKEN)
    browser.click("Sign in")
    browser.wait(lambda: browser.heading("Overview"), "the overview after signing in")
    browser.shows("No model imported yet")
    assert not browser.exceptions()
    assert TOKEN not in browser.driver.current_url

    # A second browser session (a new tab, another person) must sign in again.
    browser.open(guarded.dashboard_url)
    browser.shows("Sign in")


def test_the_dashboard_process_holds_no_token_and_listens_on_loopback(
    guarded: RunningDemo,
) -> None:
    pid = guarded.service.supervisor.actor("dashboard").pid
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert TOKEN.encode() not in environ
    listening = {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}, listening
