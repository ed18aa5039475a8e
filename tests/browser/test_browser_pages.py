"""The dashboard in a real browser on the demo: every page, and the main things a user does.

Each flow asserts what the user sees and, where the page claims a change, that the
API agrees (the dashboard talks only to the API, so that is where a change lands).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import requests
from browser_fixtures import *  # noqa: F403 (the fixtures)
from browser_service import RunningDemo
from dashboard_browser import DashboardBrowser
from prediction_rows import add_prediction, set_outcome
from selenium.webdriver.common.by import By

CHART = '[data-testid="stVegaLiteChart"]'


def test_every_page_renders_without_an_exception(
    demo: RunningDemo, browser: DashboardBrowser
) -> None:
    browser.open(demo.dashboard_url)
    pages = browser.sidebar_pages()
    assert {"Overview", "Import model", "Manage model", "Predictions", "Statistics"} <= set(pages)
    for page in pages:
        browser.go(page)
        if page == "Overview":
            # Charts first: the alert feed, then the activity charts over a window
            # whose bins fit it (an hour in minutes).
            browser.click_radio("1 h")
            browser.shows("1 min bins")
            browser.wait(lambda: browser.count(CHART) >= 3, "the overview charts")
        if page == "Statistics":
            browser.wait(lambda: browser.count(CHART) >= 3, "the statistics charts")
        browser.screenshot(page.lower().replace(" ", "_"))
        browser.assert_clean()
        # One demo banner, and no Streamlit developer chrome (Deploy, the app menu).
        assert browser.text().count("DEMO MODE") == 1, page
        assert not browser.buttons("Deploy"), page
        assert browser.count('[data-testid="stMainMenu"]') == 0, page
    # The API's own status page (README shows it beside the dashboard).
    browser.driver.get(demo.api_url + "/")
    browser.shows("DEMO DATA")
    browser.screenshot("status")


def _api(demo: RunningDemo, method: str, path: str) -> Any:
    response = requests.request(method, demo.api_url + path, timeout=30)
    response.raise_for_status()
    return response.json()


def _model(demo: RunningDemo, ident: int) -> dict[str, Any]:
    models = _api(demo, "GET", "/api/models?include_inactive=true")["models"]
    return next(m for m in models if m["id"] == ident)


def test_deactivate_and_activate_a_model(demo: RunningDemo, browser: DashboardBrowser) -> None:
    browser.open(demo.dashboard_url, "Overview")
    browser.click("Deactivate", index=0)
    browser.shows("deactivated")
    browser.assert_clean()
    assert _model(demo, 1)["is_active"] is False
    browser.screenshot("overview_after_deactivate")
    browser.click("Activate")
    browser.shows("activated")
    browser.assert_clean()
    assert _model(demo, 1)["is_active"] is True


def test_change_the_alert_threshold(demo: RunningDemo, browser: DashboardBrowser) -> None:
    browser.open(demo.dashboard_url, "Manage model")
    browser.type_into("Alert threshold", "0.83")
    browser.click("Save alert settings")
    browser.shows("Saved: alert_threshold.")
    browser.assert_clean()
    assert _api(demo, "GET", "/api/models/1/alert-config")["alert_threshold"] == 0.83
    browser.screenshot("manage_after_threshold")


async def _kill_a_delivered_job(demo: RunningDemo) -> int:
    """A delivered job of model 1 turned dead, as if its target had kept failing."""
    assert demo.service.pool is not None
    async with demo.service.pool.acquire() as conn:
        job = await conn.fetchval(
            """UPDATE webhook_outbox SET status = 'dead', delivered_at = NULL,
                   last_error = 'HTTP 500', last_status_code = 500
               WHERE id = (SELECT min(id) FROM webhook_outbox
                           WHERE 1 = ANY(active_model_ids) AND status = 'delivered')
               RETURNING id"""
        )
    assert job is not None, "the demo delivered no webhook yet"
    return int(job)


def test_webhook_health_and_retrying_a_dead_job(
    demo: RunningDemo, browser: DashboardBrowser
) -> None:
    browser.wait(
        lambda: _api(demo, "GET", "/api/models/1/n8n-status")["jobs"]["delivered"] > 0,
        "a delivered demo webhook",
        timeout=30,
    )
    job = demo.call(_kill_a_delivered_job, demo)
    browser.open(demo.dashboard_url, "Manage model")
    browser.shows("Webhook delivery")
    browser.shows(f"Job #{job}")
    browser.screenshot("manage_model")
    browser.click("Retry")
    browser.shows(f"Webhook job #{job} queued again.")
    browser.assert_clean()
    dead = _api(demo, "GET", "/api/webhooks/dead")["jobs"]
    assert job not in {j["id"] for j in dead}


def test_import_a_ready_model(demo: RunningDemo, browser: DashboardBrowser) -> None:
    """The demo imported both of its models; deleting one makes it importable again."""
    removed = _model(demo, 2)
    _api(demo, "DELETE", "/api/models/2")
    browser.open(demo.dashboard_url, "Import model")
    browser.shows(removed["name"])
    browser.screenshot("import")
    browser.click("Import")
    browser.shows("Imported model")
    browser.assert_clean()
    models = _api(demo, "GET", "/api/models?include_inactive=true")["models"]
    assert removed["model_id"] in {m["model_id"] for m in models}


def test_a_prediction_row_opens_its_coin_chart(
    demo: RunningDemo, browser: DashboardBrowser
) -> None:
    browser.open(demo.dashboard_url, "Predictions")
    browser.click_table_row("pred_table", 0)
    browser.shows("Coin chart")
    # The full mint (the table shows it shortened), in a block with a copy button.
    browser.wait(lambda: browser.count('[data-testid="stCode"]') == 1, "the coin's mint")
    mint = browser.driver.find_element(By.CSS_SELECTOR, '[data-testid="stCode"]').text.strip()
    coins = {p["coin_id"] for p in _api(demo, "GET", "/api/predictions?limit=1000")["items"]}
    assert mint in coins, mint
    browser.wait(lambda: browser.count('[data-testid="stVegaLiteChart"]') >= 1, "the coin chart")
    browser.assert_clean()
    browser.screenshot("predictions")

    # The overview's alert feed links to the same chart of one alert. The live demo's
    # alerts come by chance (an earlier test raised model 1's threshold): wait for one.
    alerts = browser.wait(
        lambda: _api(demo, "GET", "/api/predictions?tag=alert&limit=1")["items"],
        "the demo's first alert",
        timeout=120.0,
    )
    assert isinstance(alerts, list)
    alert = alerts[0]
    browser.driver.get(
        f"{demo.dashboard_url}/?page=Predictions&coin={alert['coin_id']}&prediction={alert['id']}"
    )
    browser.wait(lambda: browser.count('[data-testid="stCode"]') == 1, "the linked chart")
    code = browser.driver.find_element(By.CSS_SELECTOR, '[data-testid="stCode"]').text.strip()
    assert code == alert["coin_id"]
    browser.shows(f"Prediction #{alert['id']} of")
    browser.assert_clean()

    # The chart's time axis is UTC on a 24-hour clock, also in this browser at +05:45.
    browser.wait(lambda: len(_time_labels(browser)) >= 2, "the chart's time labels")
    at = datetime.fromisoformat(alert["data_timestamp"]).astimezone(UTC)
    for label in _time_labels(browser):
        hours, minutes = (int(part) for part in label.split(":")[:2])
        apart = abs(hours * 60 + minutes - (at.hour * 60 + at.minute)) % 1440
        assert min(apart, 1440 - apart) <= 15, (label, at.isoformat())
    labels = browser.driver.find_elements(By.CSS_SELECTOR, f"{CHART} svg .role-axis-label text")
    assert not [e.text for e in labels if "AM" in e.text or "PM" in e.text]


def _time_labels(browser: DashboardBrowser) -> list[str]:
    texts = [
        e.text.strip()
        for e in browser.driver.find_elements(By.CSS_SELECTOR, f"{CHART} svg .role-axis-label text")
    ]
    return [t for t in texts if re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", t)]


async def _judged_predictions(dsn: str, active_model_id: int) -> None:
    """30 judged predictions at p = 0.60 .. 0.89, targets reached from 0.70 on: at
    threshold t the precision is 20 / alerts(t), so 60 % is first reached at 0.60."""
    conn = await asyncpg.connect(dsn)
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        # A price change that reaches the model's target, and one that does not.
        target = await conn.fetchrow(
            "SELECT target_direction, price_change_percent FROM active_models WHERE id = $1",
            active_model_id,
        )
        sign = -1.0 if target["target_direction"] == "down" else 1.0
        reached, missed = sign * (target["price_change_percent"] + 2.0), sign * 0.01
        for i in range(30):
            p = round(0.6 + 0.01 * i, 2)
            pid = await add_prediction(
                conn,
                active_model_id,
                f"ThresholdCurveCoin{i:02d}",
                start + timedelta(seconds=i),
                prediction=1,
                probability=p,
            )
            hit = p >= 0.7
            await set_outcome(
                conn, pid, "success" if hit else "failed", change=reached if hit else missed
            )
    finally:
        await conn.close()


def test_the_threshold_curve_sits_beside_the_alert_threshold_field(
    demo: RunningDemo, database_dsn: str, browser: DashboardBrowser
) -> None:
    """Where the operator sets the threshold: the precision/recall curve from outcomes and
    the lowest threshold reaching a precision they type, in the same row, to the right."""
    demo.portal.call(_judged_predictions, database_dsn, 1)
    browser.open(demo.dashboard_url, "Manage model")
    browser.shows("Threshold from outcomes")

    def field(label: str) -> Any:
        return browser.driver.find_element(
            By.XPATH, f"//label[.//p[normalize-space()='{label}']]/following::input[1]"
        )

    threshold, wanted = field("Alert threshold"), field("Wanted precision")
    right_of_field = threshold.location["x"] + threshold.size["width"]
    assert wanted.location["x"] > right_of_field
    assert abs(wanted.location["y"] - threshold.location["y"]) < 150
    # What the API says for the wanted precision is what the page says.
    browser.type_into("Wanted precision", "0.95\n")
    block = _api(demo, "GET", "/api/models/1/statistics?target_precision=0.95")["thresholds"]
    lowest = block["lowest_threshold_for_target"]
    assert lowest is not None and block["judged"] >= 30
    browser.shows(f"Lowest threshold reaching precision 95.0%: {lowest:.2f}")
    charts = browser.driver.find_elements(By.CSS_SELECTOR, CHART)
    assert any(c.is_displayed() and c.location["x"] > right_of_field for c in charts)
    browser.screenshot("manage_threshold_curve")
    browser.assert_clean()
