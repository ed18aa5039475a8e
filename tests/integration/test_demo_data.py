"""Demo data: the synthetic market, the live collector, and the stand-in Training Service.

The stand-in is checked with OUR client and loader (storage.clients.training_service,
storage.model_files.store) over real HTTP, so a demo model is importable exactly
like a real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import polars as pl
import pytest
from waiting import wait_for

from features.matrix import FeatureSpec, build_matrix
from scripts.demo_data import (
    DEFAULT_PHASES,
    DemoTrainingService,
    SyntheticCollector,
    demo_environment,
    generate_history,
    insert_history,
    train_demo_models,
)
from storage.clients.training_service import TrainingServiceClient, TrainingServiceError
from storage.model_files.store import load_model

VALID_PHASES = {p.id for p in DEFAULT_PHASES}


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return generate_history(20, 20, seed=11)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, history: pl.DataFrame
) -> list[dict[str, Any]]:
    return train_demo_models(history, tmp_path_factory.mktemp("demo-models"))


def test_generate_history_is_deterministic_per_seed() -> None:
    first = generate_history(6, 8, seed=5)
    again = generate_history(6, 8, seed=5)
    other = generate_history(6, 8, seed=6)

    assert first.height > 50
    assert first.equals(again)
    assert not first.equals(other)


def test_generate_history_looks_like_collector_rows(history: pl.DataFrame) -> None:
    assert history.null_count().sum_horizontal().item() == 0
    # pump.fun prices: ~3e-8 at launch, ~4e-7 at graduation (SOL).
    prices = history.select("price_open", "price_high", "price_low", "price_close")
    assert prices.min().min_horizontal().item() > 1e-8
    assert prices.max().max_horizontal().item() < 1e-6
    assert (history["price_high"] >= history["price_low"]).all()
    assert (history["price_high"] >= history["price_close"]).all()
    assert (history["price_low"] <= history["price_open"]).all()
    assert set(history["phase_id_at_time"].unique().to_list()) <= VALID_PHASES
    assert history["buy_pressure_ratio"].is_between(0, 1).all()
    assert (history["num_buys"] + history["num_sells"] >= 1).all()
    assert (history["unique_wallets"] <= history["num_buys"] + history["num_sells"]).all()

    per_coin = history.sort("timestamp", maintain_order=True).group_by("mint", maintain_order=True)
    increasing = per_coin.agg((pl.col("timestamp").diff().drop_nulls() > timedelta(0)).all())
    assert increasing["timestamp"].all()

    # Phases follow the coin's age (first row = birth): Baby Zone for the first 10 minutes.
    aged = history.with_columns(
        (
            (pl.col("timestamp") - pl.col("timestamp").min().over("mint")).dt.total_seconds() / 60
        ).alias("age")
    )
    trading = aged.filter(pl.col("phase_id_at_time") != 100)
    assert trading.filter(pl.col("age") < 9.9)["phase_id_at_time"].unique().to_list() == [1]
    assert set(trading.filter(pl.col("age") > 10.1)["phase_id_at_time"].to_list()) <= {2}

    # A market, not a fixed set: more coins appeared than are alive at once, some rugged.
    assert history["mint"].n_unique() > 20
    assert (history["dev_sold_amount"] > 0).sum() >= 1
    # Irregular: not every coin writes every 5 s.
    baby = history.filter(pl.col("phase_id_at_time") == 1).sort("mint", "timestamp")
    gaps = baby.select(pl.col("timestamp").diff().over("mint").dt.total_seconds()).drop_nulls()
    assert gaps["timestamp"].n_unique() > 5


async def test_insert_history_writes_every_row(pool: asyncpg.Pool) -> None:
    frame = generate_history(3, 3, seed=2)

    written = await insert_history(pool, frame)

    assert written == frame.height
    rows = await pool.fetch("SELECT mint, timestamp, price_close FROM coin_metrics ORDER BY id")
    assert len(rows) == frame.height
    stored = {(r["mint"], r["timestamp"]) for r in rows}
    assert stored == set(zip(frame["mint"].to_list(), frame["timestamp"].to_list(), strict=True))
    first = frame.sort("timestamp").row(0, named=True)
    got = await pool.fetchval(
        "SELECT price_close FROM coin_metrics WHERE mint = $1 AND timestamp = $2",
        first["mint"],
        first["timestamp"],
    )
    assert got == pytest.approx(first["price_close"], rel=1e-12)


async def test_collector_writes_live_rows_in_small_statements(pool: asyncpg.Pool) -> None:
    collector = SyntheticCollector(pool, n_coins=4, seed=1, flush_seconds=0.05)

    async def enough_rows() -> int:
        count = await pool.fetchval("SELECT count(DISTINCT mint) FROM coin_metrics")
        return int(count) if count >= 4 else 0

    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        await wait_for(enough_rows, timeout=15, what="rows of 4 demo coins")
        tg.cancel_scope.cancel()

    rows = await pool.fetch(
        "SELECT mint, timestamp, phase_id_at_time, price_close, market_cap_close, now() - "
        "timestamp AS age FROM coin_metrics ORDER BY id"
    )
    assert collector.rows_written == len(rows) >= 4
    assert all(r["phase_id_at_time"] == 1 for r in rows)  # brand-new coins
    assert all(1e-8 < r["price_close"] < 1e-6 and r["market_cap_close"] > 0 for r in rows)
    # Live: stamped with the wall clock, never in the future.
    assert all(timedelta(0) <= r["age"] < timedelta(seconds=30) for r in rows)
    last_seen: dict[str, Any] = {}
    for r in rows:  # id order is per-coin time order
        assert r["timestamp"] > last_seen.get(r["mint"], r["timestamp"] - timedelta(1))
        last_seen[r["mint"]] = r["timestamp"]


@asynccontextmanager
async def serving(models: list[dict[str, Any]]) -> AsyncIterator[DemoTrainingService]:
    # Not a fixture: a task group must be left by the task that entered it.
    service = DemoTrainingService(models)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        yield service
        tg.cancel_scope.cancel()


async def test_stand_in_models_import_through_our_client_and_loader(
    trained: list[dict[str, Any]], tmp_path: Path
) -> None:
    async with serving(trained) as training_service:
        await _import_and_predict(training_service.base_url, tmp_path)


async def _import_and_predict(base_url: str, tmp_path: Path) -> None:
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api")
    fresh = generate_history(8, 12, seed=99)  # data the models never saw

    async with TrainingServiceClient(base_url, timeout=5) as client:
        listed = await client.list_models()
        assert sorted((m.id, m.model_type) for m in listed) == [
            (1, "xgboost"),
            (2, "random_forest"),
        ]
        for info in listed:
            assert info == await client.get_model(info.id)
            assert info.status == "READY" and not info.is_deleted
            assert info.is_time_based and info.target_direction == "up"
            assert info.future_minutes in (1, 2) and info.price_change_percent in (5.0, 3.0)
            assert info.use_engineered_features
            assert info.feature_engineering_windows == (5, 10, 15)
            m = info.metrics
            assert m.accuracy is not None and 0 < m.accuracy <= 1
            assert m.roc_auc is not None and 0 < m.roc_auc <= 1
            cm = m.confusion_matrix
            assert cm is not None and set(cm) == {"tp", "tn", "fp", "fn"}
            assert info.feature_importance is not None
            assert set(info.feature_importance) == set(info.features)

            path, _ = await client.download_model(info.id, tmp_path / "models")
            loaded = await anyio.to_thread.run_sync(load_model, path)
            assert loaded.kind == info.model_type
            assert loaded.feature_names_in == list(info.features)

            spec = FeatureSpec.from_model(info.features, info.params)
            computed = spec.compute(fresh)
            matrix = build_matrix(computed, fresh.select("mint", "timestamp"), spec)
            assert len(matrix.rows) == fresh.height
            proba = loaded.predict_proba(matrix.values)
            assert proba.shape == (fresh.height, 2)
            assert np.all((proba >= 0) & (proba <= 1))
            assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
            # A real model, not a constant: its probabilities vary with the coin.
            assert np.ptp(proba[:, 1]) > 0.1

        with pytest.raises(TrainingServiceError) as missing:
            await client.get_model(999)
        assert missing.value.status == 404
        with pytest.raises(TrainingServiceError) as no_file:
            await client.download_model(999, tmp_path / "models")
        assert no_file.value.status == 404


async def test_stand_in_lists_only_what_the_query_asks_for(
    trained: list[dict[str, Any]],
) -> None:
    models = [*trained, {**trained[0], "id": 3, "status": "TRAINING"}]
    models.append({**trained[1], "id": 4, "is_deleted": True})
    async with (
        serving(models) as service,
        TrainingServiceClient(service.base_url, timeout=5) as client,
    ):
        listed = await client.list_models()
        with pytest.raises(TrainingServiceError) as deleted:
            await client.get_model(4)

    assert sorted(m.id for m in listed) == [1, 2]
    assert deleted.value.status == 404


async def test_demo_environment_serves_models_and_writes_rows(pool: asyncpg.Pool) -> None:
    async with demo_environment(pool, n_coins=3, seed=4) as env:
        assert env.model_ids == [1, 2]
        async with TrainingServiceClient(env.training_service_url, timeout=5) as client:
            assert sorted(m.id for m in await client.list_models()) == [1, 2]
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) FROM coin_metrics"),
            timeout=15,
            what="demo rows",
        )
        url = env.training_service_url
    # Stopped with the block: the stand-in no longer answers.
    async with TrainingServiceClient(url, timeout=5) as client:
        with pytest.raises(TrainingServiceError, match="cannot connect"):
            await client.list_models()
