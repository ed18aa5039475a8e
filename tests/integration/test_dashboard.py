"""The Streamlit dashboard against the real REST API on 127.0.0.1 and a real database.

The API runs on the test's event loop (tests/app_server.py, on a free port);
`AppTest` runs the dashboard script synchronously, so it is driven from a worker
thread (`anyio.to_thread.run_sync`) while the loop keeps serving requests.
"""

from __future__ import annotations

import json
import multiprocessing.spawn
import os
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest
from aiohttp import web
from app_server import serve, served
from model_factory import train_model
from ports import closed_port, free_port
from prediction_rows import add_prediction, set_outcome
from streamlit.testing.v1 import AppTest
from waiting import wait_for
from webhook_receiver import insert_active_model, store_predictions

from actors.app.dashboard_process import DashboardProcess
from actors.runtime.state import ServiceState
from storage.config import Settings
from web.dashboard.api_client import ApiClient
from web.dashboard.pages_predictions import price_path

APP = Path(__file__).resolve().parents[2] / "web" / "dashboard" / "app.py"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOKEN = "dashboard-test-token"


def serve_api(
    settings: Settings, pool: asyncpg.Pool, state: ServiceState | None = None
) -> AbstractAsyncContextManager[str]:
    """The API without access log lines, and quick to stop (Streamlit keeps connections)."""
    return served(settings, pool, state, access_log=None, shutdown_timeout=0.5)


class Dashboard:
    """AppTest of the dashboard, run off the event loop."""

    def __init__(self, page: str = "Overview") -> None:
        self.at = AppTest.from_file(str(APP), default_timeout=20)
        self.page = page
        token = os.environ.get("API_TOKEN", "")
        if token:
            # Signed in (the sign-in form itself is tested in tests/browser): the
            # dashboard holds no token of its own, only the session's.
            self.at.session_state["_api_client"] = ApiClient(os.environ["API_BASE_URL"], token)

    async def run(self) -> AppTest:
        await anyio.to_thread.run_sync(self.at.run)
        assert not self.at.exception, [e.value for e in self.at.exception]
        return self.at

    async def open(self) -> AppTest:
        await self.run()
        if self.page != "Overview":
            self.at.sidebar.radio(key="page").set_value(self.page)
            await self.run()
        return self.at

    async def act(self, change: Callable[[AppTest], Any]) -> AppTest:
        """Apply a widget change (set_value / click) and run the script again."""
        change(self.at)
        return await self.run()

    def errors(self) -> list[str]:
        return [str(e.value) for e in self.at.error]

    def texts(self) -> str:
        parts = [
            str(e.value)
            for kind in ("markdown", "caption", "info", "success", "warning")
            for e in self.at.get(kind)
        ]
        return "\n".join(parts)


def _chips(column: Any) -> list[str]:
    """The values of a chip column (each cell holds a one-element list)."""
    return [str(next(iter(cell))) for cell in column]


def button(at: AppTest, label: str) -> Any:
    """The one button (form submit buttons included) with this label."""
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, [b.label for b in at.button]
    return found[0]


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    def point_at(base_url: str, token: str = "") -> None:
        monkeypatch.setenv("API_BASE_URL", base_url)
        monkeypatch.setenv("API_TOKEN", token)

    return point_at


async def _model(pool: asyncpg.Pool, model_id: int, **columns: Any) -> int:
    async with pool.acquire() as conn:
        return await insert_active_model(conn, model_id, **columns)


async def _prediction(
    pool: asyncpg.Pool,
    active_model_id: int,
    coin: str,
    at: datetime,
    probability: float,
    *,
    result: str | None = None,
    change: float | None = None,
    price: float | None = 1.0,
    threshold: float = 0.7,
) -> int:
    async with pool.acquire() as conn:
        pid = await add_prediction(
            conn, active_model_id, coin, at, prediction=int(probability >= 0.5),
            probability=probability, alert_threshold=threshold, price_close_at_t=price,
            target_kind="time_based", future_minutes=5, price_change_percent=10.0,
            target_direction="up",
        )  # fmt: skip
        if result is not None:
            evaluated = at + timedelta(minutes=5)
            await set_outcome(
                conn, pid, result, change=change, evaluated_at=evaluated,
                eval_price_timestamp=evaluated,
                price_close_at_eval=None if price is None or change is None
                else price * (1 + change / 100),
            )  # fmt: skip
        return pid


async def _prices(pool: asyncpg.Pool, coin: str, points: list[tuple[datetime, float]]) -> None:
    async with pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO coin_metrics (mint, "timestamp", price_open, price_high, price_low,
                   price_close) VALUES ($1, $2, $3, $3, $3, $3)""",
            [(coin, at, price) for at, price in points],
        )


async def _row(pool: asyncpg.Pool, active_model_id: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    assert row is not None
    return dict(row)


async def _seed(pool: asyncpg.Pool) -> tuple[int, int]:
    """An active XGBoost model with evaluated predictions and an inactive forest."""
    live = await _model(
        pool,
        41,
        name="pump-hunter",
        training_metrics={"accuracy": 0.8, "f1": 0.7, "precision": 0.75, "recall": 0.65},
    )
    idle = await _model(pool, 42, name="old-forest", model_type="random_forest", is_active=False)
    # 2 true positives (alerts +12 %, +20 %), 1 false positive (alert −5 %), 1 true negative.
    await _prediction(pool, live, "MintAAA", T0, 0.91, result="success", change=12.0)
    await _prediction(
        pool, live, "MintBBB", T0 + timedelta(minutes=1), 0.85, result="success", change=20.0
    )
    await _prediction(
        pool, live, "MintAAA", T0 + timedelta(minutes=2), 0.75, result="failed", change=-5.0
    )
    await _prediction(
        pool, live, "MintCCC", T0 + timedelta(minutes=3), 0.2, result="success", change=1.0
    )
    await _prediction(pool, live, "MintBBB", T0 + timedelta(minutes=4), 0.6)
    return live, idle


# ---- the API is not there ---------------------------------------------------------------


async def test_unreachable_api_shows_a_clear_message_on_every_page(
    dashboard_env: Callable[[str, str], None],
) -> None:
    port = closed_port()
    dashboard_env(f"http://127.0.0.1:{port}", "")
    dashboard = Dashboard()
    at = await dashboard.open()
    for page in at.sidebar.radio(key="page").options:
        at.sidebar.radio(key="page").set_value(page)
        await dashboard.run()
        errors = dashboard.errors()
        assert len(errors) == 1, (page, errors)
        assert f"unreachable at http://127.0.0.1:{port}" in errors[0]
        assert "Traceback" not in errors[0]


# ---- pages over routes that exist ---------------------------------------------------------


async def test_demo_mode_is_labelled_and_health_is_shown(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    state = ServiceState(demo=True, intake_lag_seconds=1.5)
    async with serve_api(settings, pool, state) as base:
        dashboard_env(base, "")
        dashboard = Dashboard()
        at = await dashboard.open()
        assert [str(w.value) for w in at.warning if "DEMO MODE" in str(w.value)] == [
            "DEMO MODE: generated coins and models, not real data."
        ]
        assert next(m for m in at.metric if m.label == "Service").value == "healthy"
        lag = next(m for m in at.metric if m.label == "Intake lag")
        assert lag.value == "1.5 s"

    state = ServiceState(demo=False)
    async with serve_api(settings, pool, state) as base:
        dashboard_env(base, "")
        at = await Dashboard().open()
        assert not any("DEMO" in str(w.value) for w in at.warning)


# ---- pages over routes being built ---------------------------------------------------------


async def test_overview_lists_models_and_deactivates_one(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    settings = settings.replace(api_token=TOKEN, api_public_reads=False)
    live, idle = await _seed(pool)
    async with serve_api(settings, pool) as base:
        dashboard_env(base, TOKEN)
        dashboard = Dashboard()
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        # The alert feed first (the newest alert is the 0.75 one), the models table last.
        feed = at.dataframe[0].value
        assert feed["probability"].iloc[0] == 0.75 and _chips(feed["outcome"])[0] == "failed"
        table = at.dataframe[-1].value
        rows = {int(r["id"]): r for r in table.to_dict("records")}
        assert rows[live]["name"] == "pump-hunter" and rows[live]["type"] == "xgboost"
        assert rows[idle]["type"] == "random_forest" and not rows[idle]["active"]
        assert rows[live]["predictions"] == "5"
        # 3 of 4 evaluated predictions were right; training said 80 %.
        assert rows[live]["live success rate"] == "75.0%"
        assert rows[live]["training accuracy"] == "80.0%"

        await dashboard.act(lambda at: at.button(key=f"toggle_{live}").click())
        assert not dashboard.errors(), dashboard.errors()
        assert (await _row(pool, live))["is_active"] is False
        assert at.button(key=f"toggle_{live}").label == "Activate"
        assert (await _row(pool, idle))["is_active"] is False


async def test_alert_threshold_change_sends_only_that_field(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    settings = settings.replace(api_token=TOKEN, api_public_reads=False)
    model = await _model(
        pool,
        41,
        # The API shows this URL redacted; an untouched form must not write it back.
        n8n_webhook_url="https://bot:s3cret@n8n.example/webhook/own",
        n8n_send_modes=["alerts_only"],
        coin_filter_mode="whitelist",
        coin_whitelist=["MintA", "MintB"],
        ignore_alert_seconds=60,
        max_open_alert=3,
    )
    before = await _row(pool, model)
    async with serve_api(settings, pool) as base:
        dashboard_env(base, TOKEN)
        dashboard = Dashboard("Manage model")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        assert at.text_input(key=f"n8n_webhook_url_{model}").value == (
            "https://bot:***@n8n.example/webhook/own"
        )

        at.number_input(key=f"alert_threshold_{model}").set_value(0.85)
        await dashboard.act(lambda at: button(at, "Save alert settings").click())
        assert not dashboard.errors(), dashboard.errors()
        after = await _row(pool, model)
        assert {k for k in before if before[k] != after[k]} == {"alert_threshold", "updated_at"}
        assert after["alert_threshold"] == 0.85
        assert after["n8n_webhook_url"] == "https://bot:s3cret@n8n.example/webhook/own"

        # A wrong value: the API's message, verbatim, and nothing written.
        at.text_input(key=f"n8n_webhook_url_{model}").set_value("ftp://files.example/hook")
        await dashboard.act(lambda at: button(at, "Save alert settings").click())
        assert dashboard.errors() == ["n8n_webhook_url: must be an http or https URL with a host"]
        assert await _row(pool, model) == after

        at.text_input(key=f"n8n_webhook_url_{model}").set_value(
            "https://bot:***@n8n.example/webhook/own"
        )
        at.number_input(key=f"ignore_alert_seconds_{model}").set_value(120)
        await dashboard.act(lambda at: button(at, "Save ignore windows").click())
        assert not dashboard.errors(), dashboard.errors()
        final = await _row(pool, model)
        assert {k for k in after if after[k] != final[k]} == {"ignore_alert_seconds", "updated_at"}


async def test_threshold_curve_beside_the_alert_threshold_gives_the_lowest_for_a_precision(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    """30 judged predictions at p = 0.60 .. 0.89; the targets of those at 0.70 and above
    were reached. At threshold t the precision is 20 / alerts(t)."""
    model = await _model(pool, 41, alert_threshold=0.75)
    for i in range(30):
        p = round(0.6 + 0.01 * i, 2)
        await _prediction(
            pool,
            model,
            f"Mint{i:03d}",
            T0 + timedelta(seconds=i),
            p,
            result="success" if p >= 0.7 else "failed",
            change=12.0 if p >= 0.7 else -3.0,
        )
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Manage model")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        # 20 / 25 alerts = 80 % first at 0.65.
        assert "Lowest threshold reaching precision 80.0%: **0.65**" in dashboard.texts()
        assert (
            "At the saved threshold 0.75: precision 100.0%, recall 75.0%, 15 alerts."
            in dashboard.texts()
        )
        charts = [json.dumps(json.loads(c.proto.spec)) for c in at.get("vega_lite_chart")]
        assert any("alert threshold" in c and "lowest for wanted precision" in c for c in charts)

        # 20 / 28 = 71.4 % first at 0.62.
        at = await dashboard.act(
            lambda at: at.number_input(key=f"target_precision_{model}").set_value(0.7)
        )
        assert "Lowest threshold reaching precision 70.0%: **0.62**" in dashboard.texts()
        # The threshold field itself is untouched by the panel beside it.
        assert at.number_input(key=f"alert_threshold_{model}").value == 0.75


async def test_a_model_goes_to_shadow_and_is_promoted_from_manage_model(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    model = await _model(pool, 41, name="candidate")
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Manage model")
        await dashboard.open()
        assert "Live: alerts go to webhooks." in dashboard.texts()
        await dashboard.act(lambda at: button(at, "Run in shadow").click())
        assert not dashboard.errors(), dashboard.errors()
        assert (await _row(pool, model))["mode"] == "shadow"
        at = await dashboard.run()
        assert "never sent to webhooks" in dashboard.texts()
        assert at.selectbox(key="manage_model").format_func(model) == f"#{model} candidate (shadow)"
        await dashboard.act(lambda at: button(at, "Promote to live").click())
        assert not dashboard.errors(), dashboard.errors()
        assert (await _row(pool, model))["mode"] == "live"


async def test_predictions_filter_by_tag_and_coin(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    await _seed(pool)
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Predictions")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        assert len(at.dataframe[0].value) == 5
        assert "**5** matching predictions" in dashboard.texts()

        at.selectbox(key="pred_tag").set_value("alert")
        at = await dashboard.run()
        table = at.dataframe[0].value
        assert sorted(table["probability"]) == [0.75, 0.85, 0.91]
        assert set(_chips(table["tag"])) == {"alert"}
        assert "**3** matching predictions" in dashboard.texts()

        at.text_input(key="pred_coin").set_value("MintAAA")
        at = await dashboard.run()
        table = at.dataframe[0].value
        assert list(table["coin"]) == ["MintAAA", "MintAAA"]
        assert sorted(_chips(table["outcome"])) == ["failed", "success"]
        assert set(table["model"]) == {"pump-hunter"}

        at.selectbox(key="pred_outcome").set_value("failed")
        at.slider(key="pred_prob").set_value((0.8, 1.0))
        at = await dashboard.run()
        assert at.dataframe[0].value.empty
        assert "**0** matching predictions" in dashboard.texts()


async def test_prediction_row_opens_the_coin_price_chart(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    live = await _model(pool, 41)
    prediction = await _prediction(
        pool, live, "MintAAA", T0, 0.9, result="success", change=20.0, price=2.0
    )
    await _prices(
        pool, "MintAAA", [(T0 + timedelta(minutes=m), 2.0 + 0.1 * m) for m in range(-2, 7)]
    )
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Predictions")
        await dashboard.open()
        at = await dashboard.act(lambda at: at.selectbox(key="pred_detail").set_value(prediction))
        assert not dashboard.errors(), dashboard.errors()
        assert "Coin chart" in [str(h.value) for h in at.subheader]
        assert "MintAAA" in [str(c.value) for c in at.code]
        charts = at.get("vega_lite_chart")
        assert charts, "no price chart"
        spec = json.loads(charts[-1].proto.spec)
        assert "price change from prediction (%)" in json.dumps(spec)

        # The chart's numbers: % from the price at the prediction (2.0), from the API's
        # own answer.
        async with aiohttp.ClientSession() as http:
            url = f"{base}/api/models/{live}/coins/MintAAA/details"
            async with http.get(url) as response:
                detail = await response.json()
        path = price_path(detail, {"price_close_at_t": 2.0, "data_timestamp": T0.isoformat()})
        at_five = path[path["time"] == T0 + timedelta(minutes=5)]["change_pct"]
        assert list(at_five) == pytest.approx([25.0])
        assert path["change_pct"].min() == pytest.approx(-10.0)


async def test_a_shadow_models_predictions_read_as_shadow_in_the_table_and_chart(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    live = await _model(pool, 41, name="sender")
    shadow = await _model(pool, 42, name="candidate", mode="shadow")
    await _prediction(pool, live, "MintAAA", T0, 0.9)
    watched = await _prediction(pool, shadow, "MintAAA", T0, 0.8)
    await _prices(pool, "MintAAA", [(T0 + timedelta(minutes=m), 2.0) for m in range(-1, 3)])
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Predictions")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        assert sorted(at.dataframe[0].value["model"]) == ["candidate (shadow)", "sender"]
        at = await dashboard.act(lambda at: at.selectbox(key="pred_detail").set_value(watched))
        assert not dashboard.errors(), dashboard.errors()
        assert "Shadow model: this prediction was stored and evaluated, never sent." in (
            dashboard.texts()
        )
        assert "candidate (shadow)" in dashboard.texts()


async def test_statistics_show_live_quality_next_to_training(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    await _seed(pool)
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Statistics")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        metrics = {m.label: m.value for m in at.metric}
        # 2 TP, 1 FP, 1 TN, 0 FN of the seeded evaluations.
        assert metrics["live accuracy"] == "75.0%"
        assert metrics["live precision"] == "66.7%"
        assert metrics["live recall"] == "100.0%"
        assert "training: 80.0%" in dashboard.texts()
        assert len(at.get("vega_lite_chart")) >= 4  # matrix, time, histogram, cumulative


@pytest.fixture
def probe_without_apptest_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest runs the dashboard script as `__main__` of this test process, and the API
    it calls (in this process too) starts the model probe child, which multiprocessing
    would make re-run the parent's `__main__`, i.e. the dashboard. The service and the
    dashboard are separate processes in use, so the probe's child is started here as it
    is there: without the parent's main module."""
    original = multiprocessing.spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    monkeypatch.setattr(multiprocessing.spawn, "get_preparation_data", without_main)


@pytest.mark.usefixtures("probe_without_apptest_main")
async def test_import_page_imports_a_ready_model(
    settings: Settings,
    pool: asyncpg.Pool,
    dashboard_env: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    features = ["price_close", "volume_sol"]
    model_file = train_model("xgboost", features)
    ready = {
        "id": 77,
        "name": "fresh-xgb",
        "model_type": "xgboost",
        "status": "READY",
        "is_deleted": False,
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "target_variable": "price_close",
        "target_operator": None,
        "target_value": None,
        "features": features,
        "phases": [1, 2],
        "params": {
            "_time_based": {
                "enabled": True,
                "future_minutes": 5,
                "min_percent_change": 10.0,
                "direction": "up",
            }
        },
        "training_accuracy": 0.81,
        "training_f1": 0.7,
        "training_precision": 0.72,
        "training_recall": 0.68,
        "roc_auc": 0.85,
        "future_minutes": 5,
        "price_change_percent": 10.0,
        "target_direction": "up",
    }

    # A model this service cannot compute a feature of: the import must be refused.
    refused = {**ready, "id": 78, "name": "odd-features", "features": ["price_close", "moon_phase"]}
    offered = {77: ready, 78: refused}

    async def models(request: web.Request) -> web.Response:
        return web.json_response(list(offered.values()))

    async def one(request: web.Request) -> web.Response:
        model = offered.get(int(request.match_info["id"]))
        if model is None:
            return web.json_response({"detail": "not found"}, status=404)
        return web.json_response(model)

    files = {77: model_file, 78: train_model("xgboost", refused["features"])}

    async def download(request: web.Request) -> web.Response:
        body = files[int(request.match_info["id"])]
        return web.Response(body=body, content_type="application/octet-stream")

    training = web.Application()
    training.router.add_get("/api/models", models)
    training.router.add_get("/api/models/{id}", one)
    training.router.add_get("/api/models/{id}/download", download)
    async with serve(training, access_log=None) as training_base:
        settings = settings.replace(training_service_api_url=f"{training_base}/api")
        async with serve_api(settings, pool) as base:
            dashboard_env(base, "")
            dashboard = Dashboard("Import model")
            at = await dashboard.open()
            assert not dashboard.errors(), dashboard.errors()
            assert "Features: 2" in dashboard.texts()
            assert "price +10.0% within 5 min" in dashboard.texts()
            # Refused: the API's own message, verbatim, and nothing imported.
            at = await dashboard.act(lambda at: at.button(key="import_78").click())
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{base}/api/models/import", json={"model_id": 78}) as response,
            ):
                assert response.status == 422, await response.text()
                message = (await response.json())["error"]["message"]
            assert "moon_phase" in message
            assert dashboard.errors() == [message]

            # Alerts only is proposed (one n8n execution per alert, not per tick).
            assert at.radio(key="send_modes_77").value == "Alerts only (recommended)"
            at = await dashboard.act(lambda at: at.button(key="import_77").click())
            assert not dashboard.errors(), dashboard.errors()
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT model_id, is_active, n8n_send_modes FROM active_models"
                )
            assert [(r["model_id"], r["is_active"]) for r in rows] == [(77, True)]
            assert [list(r["n8n_send_modes"]) for r in rows] == [["alerts_only"]]
            assert any("Imported model 77" in str(s.value) for s in at.success)
            buttons = {b.key for b in at.button}
            assert "import_77" not in buttons and "import_78" in buttons


# ---- the child process ---------------------------------------------------------------------


async def test_dashboard_process_restarts_a_dead_child_and_stops_it_on_shutdown(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with serve_api(settings, pool) as base:
        actor = DashboardProcess(
            port=free_port(), api_base_url=base, backoff_initial=0.1, stop_deadline=3.0
        )
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            with anyio.fail_after(40):
                await actor.wait_ready()
            first = actor.pid
            assert first is not None
            async with aiohttp.ClientSession() as http, http.get(actor.url) as response:
                assert response.status == 200
            os.kill(first, signal.SIGKILL)
            await wait_for(
                lambda: actor.pid not in (None, first), timeout=10, what="a new dashboard"
            )
            with anyio.fail_after(40):
                await actor.wait_ready()
            assert actor.restarts == 1
            second = actor.pid
            actor.request_stop()
        assert actor.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)


async def test_sign_in_check_refuses_a_wrong_token_also_where_reads_are_public(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The dashboard's sign-in asks the API about the typed token with a read; with
    public reads that read must still refuse a wrong token, or any text would do."""
    settings = settings.replace(api_token=TOKEN, api_public_reads=True)
    async with serve_api(settings, pool) as base:
        client = ApiClient(base)
        wrong = await anyio.to_thread.run_sync(client.with_token("guess").token_accepted)
        right = await anyio.to_thread.run_sync(client.with_token(TOKEN).token_accepted)
        anonymous = await anyio.to_thread.run_sync(lambda: client.models())
    assert (wrong, right) == (False, True)
    assert anonymous == []


async def test_dead_and_waiting_jobs_are_shown_and_retried_in_one_click(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    """A model whose alerts died or wait on a missing n8n endpoint is loud on the
    overview and on its Manage page, and one button queues every such job again."""
    url = "https://n8n.example/webhook/pump-alerts"
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 51, n8n_webhook_url=url)
        await store_predictions(
            conn, model, [("CoinA", T0, 0.9), ("CoinB", T0, 0.2)], default_url=url
        )
        await conn.execute(
            "UPDATE webhook_outbox SET status = CASE coin_id WHEN 'CoinA' THEN 'waiting'"
            " ELSE 'dead' END, delivered_at = NULL"
        )
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        overview = Dashboard()
        at = await overview.open()
        lost = [str(e.value) for e in at.error if "not reaching n8n" in str(e.value)]
        assert len(lost) == 1 and "wait for a missing endpoint" in lost[0], lost

        dashboard = Dashboard("Manage model")
        at = await dashboard.open()
        lost = [str(e.value) for e in at.error if "not reaching n8n" in str(e.value)]
        assert len(lost) == 1, [str(e.value) for e in at.error]
        metrics = {m.label: m.value for m in at.metric}
        assert (metrics["Dead jobs"], metrics["Waiting jobs"]) == ("1", "1")

        at = await dashboard.act(lambda at: at.button(key=f"retry_all_jobs_{model}").click())
        rows = await pool.fetch("SELECT status FROM webhook_outbox ORDER BY id")
        assert [r["status"] for r in rows] == ["pending", "pending"]
        assert any("queued again" in str(s.value) for s in at.success)
