"""Backtest: the same rows through the running stream and through a backtest agree.

The stream is the real service (intake, batcher, predictor, evaluator) with a
model imported from a Training Service stub; the backtest loads that model
through the import's checks and scores the same `coin_metrics` rows, and
every tick the stream predicted must get the same probability (1e-9) and the
same outcome. A recording of the same rows must give the same backtest.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import polars as pl
from coin_rows import COLUMNS, coin_rows, insert_rows
from intake_cursor import cursor_reached
from service_runner import predictors_running, running_service
from training_service_stub import TrainingServiceStub
from waiting import wait_for

from actors.app.cli import build_parser
from actors.backtest.cli import backtest_command
from actors.backtest.engine import TICK_COLUMNS, BacktestModel, ModelRun
from actors.backtest.run import run_on_database, run_on_frame
from actors.housekeeping.evaluator import Evaluator
from features.columns import normalise
from storage.config import Settings
from storage.db.pool import connect, create_pool
from storage.models.model_import import client_from_settings, load_checked_model

# Base columns, windowed and running features: the stream computes these from a short
# history window plus carried prefix state, the backtest from each coin's whole history.
FEATURES = [
    "price_close",
    "volume_sol",
    "buy_pressure_ratio",
    "rolling_ath",
    "ath_distance_pct",
    "minutes_since_ath",
    "dev_sold_cumsum",
    "price_roc_5",
    "volume_ratio_10",
    "buy_pressure_ma_5",
    "price_roc_10_has_data",
]
MODEL = {
    "phases": [1, 2],
    "future_minutes": 1,
    "price_change_percent": 2.0,
    "target_direction": "up",
    "params": {"use_engineered_features": True, "feature_engineering_windows": [5, 10]},
}
STEPS = 45
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COINS = ("coinA", "coinB", "coinC", "coinP3")


def _market(start: datetime) -> list[list[dict[str, Any]]]:
    """Rows per time step, one per coin; coinP3 leaves the model's phases half-way."""
    per_coin = {
        mint: coin_rows(mint, STEPS, start=start, step_seconds=5.0, seed=i + 3)
        for i, mint in enumerate(COINS)
    }
    for row in per_coin["coinP3"][STEPS // 2 :]:
        row["phase_id_at_time"] = 3
    return [[per_coin[m][i] for m in COINS] for i in range(STEPS)]


async def _stream_predictions(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        async with http.get("/api/predictions", params={"limit": 1000, "offset": len(items)}) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def _by_tick(run: ModelRun) -> dict[tuple[str, datetime], dict[str, Any]]:
    return {(r["mint"], r["timestamp"]): r for r in run.ticks().iter_rows(named=True)}


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


async def test_every_tick_the_stream_predicted_gets_the_same_probability_and_outcome(
    settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    settings = settings.replace(
        feature_history_size=21,  # coins outgrow it: running features need the prefix state
        batch_timeout_seconds=0.01,
        evaluation_grace_seconds=1,
        # The rows are stamped in the past but inserted now: the service's own evaluator
        # would judge a tick before the rows of its window exist. An evaluator run after
        # the last insert judges them as a live one would, grace after the window.
        evaluation_interval_seconds=3600,
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    market = _market(start)
    async with TrainingServiceStub() as ts:
        ts.add_model(7, "xgboost", FEATURES, seed=2, **MODEL)
        settings = settings.replace(training_service_api_url=ts.base_url)
        conn = await connect(db_dsn)
        pool = await create_pool(db_dsn, min_size=1, max_size=3)
        try:
            async with (
                running_service(settings) as service,
                aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
            ):
                async with http.post("/api/models/import", json={"model_id": 7}) as resp:
                    assert resp.status == 201, await resp.text()
                await wait_for(
                    lambda: predictors_running(service) > 0,
                    what="the predictor",
                )
                # One step at a time, each processed before the next: the stream predicts
                # every row instead of coalescing a coin's rows into its newest.
                for step, rows in enumerate(market):
                    await insert_rows(conn, rows)
                    await wait_for(lambda: _consumed(conn), timeout=20, what=f"step {step}")
                await Evaluator.from_settings(settings, pool).evaluate_due()
                stream = await wait_for(
                    lambda: _all_evaluated(http), timeout=30, what="every prediction evaluated"
                )
            downloads = ts.downloads(7)
            client = client_from_settings(settings)
            try:
                checked = await load_checked_model(pool, settings, client, 7)
            finally:
                await client.aclose()
            assert ts.downloads(7) == downloads, "the imported file is reused, not downloaded"
            model = BacktestModel.from_checked(checked)
            (run,) = await run_on_database(pool, [model], start=None, end=None, grace_seconds=1)
            recording = tmp_path / "recording.parquet"
            rows = await conn.fetch(
                "SELECT " + ", ".join(f'"{c}"' for c in COLUMNS) + " FROM coin_metrics ORDER BY id"
            )
        finally:
            await pool.close()
            await conn.close()

    backtest = _by_tick(run)
    # coinP3's rows in phase 3 are neither predicted nor backtested.
    assert {mint for mint, _ in backtest} == set(COINS)
    assert all(
        t < start + timedelta(seconds=5 * (STEPS // 2)) for m, t in backtest if m == "coinP3"
    )
    assert len(stream) > STEPS * 3, "the stream predicted most ticks"
    outcomes = set()
    for p in stream:
        key = (p["coin_id"], datetime.fromisoformat(p["data_timestamp"]))
        assert key in backtest, f"the backtest has no tick {key}"
        b = backtest[key]
        assert abs(b["probability"] - p["probability"]) <= 1e-9, key
        assert (b["prediction"], b["tag"]) == (p["prediction"], p["tag"]), key
        assert b["outcome"] == p["evaluation_result"], (key, b, p)
        for column in ("actual_change_pct", "max_gain_pct", "max_drawdown_pct"):
            assert _close(b[column], p[column]), (key, column, b[column], p[column])
        outcomes.add(b["outcome"])
    assert outcomes >= {"success", "failed"}, "both outcomes occur, so the test can tell them"

    # The same rows as a recording: the same backtest.
    frame = normalise(pl.DataFrame([dict(r) for r in rows]))
    frame.write_parquet(recording)
    (from_file,) = await run_on_frame(pl.read_parquet(recording), [model], start=None, end=None)
    assert (
        from_file.ticks()
        .drop("outcome", "came_true")
        .equals(run.ticks().drop("outcome", "came_true"))
    )


async def _consumed(conn: asyncpg.Connection) -> bool:
    """Every row inserted so far has been read by the intake (the cursor passed it)."""
    top = await conn.fetchval("SELECT max(id) FROM coin_metrics")
    return top is not None and await cursor_reached(conn, top)


async def _all_evaluated(http: aiohttp.ClientSession) -> list[dict[str, Any]] | None:
    items = await _stream_predictions(http)
    if items and all(p["evaluation_result"] is not None for p in items):
        return items
    return None


async def test_backtest_command_on_a_recording_writes_every_tick_and_a_json_summary(
    settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    start = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    rows = [r for step in _market(start) for r in step]
    recording = tmp_path / "recording.csv"
    pl.DataFrame(rows).write_csv(recording)
    out = tmp_path / "ticks.parquet"
    async with TrainingServiceStub() as ts:
        ts.add_model(7, "random_forest", FEATURES, seed=4, **MODEL)
        settings = settings.replace(training_service_api_url=ts.base_url)
        args = build_parser().parse_args(
            [
                *("backtest", "--model", "7", "--source", str(recording), "--out", str(out)),
                *("--json", "--quiet", "--to", "2026-11-20T12:02:00"),
            ]
        )
        printed = io.StringIO()
        assert await backtest_command(settings, args, out=printed) == 0
    summary = json.loads(printed.getvalue().strip().splitlines()[-1])
    ticks = pl.read_parquet(out)
    assert ticks.columns == list(TICK_COLUMNS)
    assert summary["ticks"] == ticks.height > 0
    assert ticks["timestamp"].max() <= datetime(2026, 11, 20, 12, 2, tzinfo=UTC)
    assert summary["coins"] == 4
    assert [t["threshold"] for t in summary["thresholds"]] == [
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.95,
    ]
    assert summary["alerts"] == ticks.filter(pl.col("probability") >= 0.7).height
    assert {"precision", "recall", "f1", "seconds"} <= set(summary)
    # Judged on rows after --to, up to the end of each window; none pending (the
    # recording runs 45 x 5 s, well past 12:02 + 1 minute).
    assert set(ticks["outcome"].unique()) <= {"success", "failed", "not_applicable"}
    # Not imported: nothing left behind.
    assert not list(Path(settings.model_storage_path).glob("*"))  # noqa: ASYNC240
    conn = await connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM active_models") == 0
    finally:
        await conn.close()


async def test_backtest_command_names_the_option_of_a_bad_value(
    settings: Settings, capsys: Any
) -> None:
    args = build_parser().parse_args(["backtest", "--model", "7", "--from", "yesterday"])
    assert await backtest_command(settings, args) == 2
    assert "--from" in capsys.readouterr().err
    args = build_parser().parse_args(["backtest", "--model", "7", "--out", "x.xlsx"])
    assert await backtest_command(settings, args) == 2
    assert "--out" in capsys.readouterr().err


async def test_a_training_service_model_as_it_comes_backtests_with_its_time_based_target(
    settings: Settings, tmp_path: Path
) -> None:
    """The golden pickles (scikit-learn 1.3.2 / XGBoost 2.0.2) served as the real API
    serves them: the target only in `params._time_based` (3 minutes, +4 %), which wins
    over the flat fields (10 minutes here, as an old row might still say)."""
    fixtures = FIXTURES
    expected = json.loads((fixtures / "models" / "expected_probabilities.json").read_text())
    recording = fixtures / "features" / "coin_metrics.csv"
    last = pl.read_csv(recording)["timestamp"].str.to_datetime(time_zone="UTC").max()
    assert isinstance(last, datetime)
    time_based = {"enabled": True, "future_minutes": 3, "min_percent_change": 4.0}
    time_based["direction"] = "up"
    async with TrainingServiceStub() as ts:
        for model_id, kind in ((1, "random_forest"), (2, "xgboost")):
            ts.add_file_model(
                model_id,
                fixtures / "models" / expected[kind]["file"],
                kind,
                expected[kind]["features"],
                phases=None,
                params={
                    "use_engineered_features": True,
                    "feature_engineering_windows": [5, 10, 15],
                    "_time_based": time_based,
                },
            )
        settings = settings.replace(training_service_api_url=ts.base_url)
        out = tmp_path / "ticks.csv"
        args = build_parser().parse_args(
            [
                *("backtest", "--model", "1", "--model", "2", "--source", str(recording)),
                *("--out", str(out), "--json", "--quiet"),
            ]
        )
        printed = io.StringIO()
        assert await backtest_command(settings, args, out=printed) == 0
    document = json.loads(printed.getvalue().strip().splitlines()[-1])
    assert [m["model_id"] for m in document["models"]] == [1, 2]
    ticks = pl.read_csv(out, try_parse_dates=True)
    assert ticks.columns == ["model_id", *TICK_COLUMNS]
    for summary in document["models"]:
        # Every row of the recording: scored, or skipped with the stream's reason (the
        # fixture has NULLs in base columns these models use).
        assert summary["ticks"] + sum(summary["skipped"].values()) == 599
        assert set(summary["skipped"]) <= {"NULL in a base column the model uses"}
    # Pending exactly when T + 3 minutes is after the recording's last row.
    stamps = ticks["timestamp"].dt.convert_time_zone("UTC")
    due_after_end = (stamps + timedelta(minutes=3)) > last
    assert (ticks["outcome"] == "pending").to_list() == due_after_end.to_list()
