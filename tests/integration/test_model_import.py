"""The import workflow against a real Training Service stub and a real PostgreSQL.

Models are trained in the test (tests/model_factory.py) or are the golden
fixture pickles; nothing of ours is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest
from ports import closed_port
from prediction_rows import add_prediction
from structlog.testing import capture_logs
from training_service_stub import TrainingServiceStub, training_service
from waiting import wait_for

from storage.clients.training_service import TrainingServiceClient
from storage.config import Settings
from storage.model_files.store import load_model
from storage.models import active_models
from storage.models.model_import import (
    ModelImportError,
    client_from_settings,
    delete_imported_model,
    import_model,
    reload_model,
    update_metrics,
)
from web.errors import status_of

__all__ = ["training_service"]  # the fixture, imported for pytest

FIXTURES = Path(__file__).parents[1] / "fixtures" / "models"
FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]


@pytest.fixture
async def client(
    training_service: TrainingServiceStub, settings: Settings
) -> AsyncIterator[TrainingServiceClient]:
    async with client_from_settings(
        settings.replace(training_service_api_url=training_service.base_url)
    ) as ts_client:
        yield ts_client


def _sha_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)


def _files(settings: Settings) -> list[str]:
    directory = Path(settings.model_storage_path)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def _count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM active_models"))


async def _refused(
    pool: asyncpg.Pool, settings: Settings, client: TrainingServiceClient, model_id: int
) -> ModelImportError:
    with pytest.raises(ModelImportError) as caught:
        await import_model(pool, settings, client, model_id)
    # Whatever the reason: no row, no file, no temporary file.
    assert await _count(pool) == 0
    assert _files(settings) == []
    return caught.value


async def test_import_stores_the_target_features_metrics_and_a_checksummed_file(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
    notes: list[dict[str, Any]],
) -> None:
    # _time_based wins over the flat fields, including its zero threshold.
    training_service.add_model(
        7,
        "xgboost",
        FEATURES,
        params={
            "use_engineered_features": True,
            "feature_engineering_windows": [5, 10],
            "_time_based": {
                "enabled": True,
                "future_minutes": 15,
                "min_percent_change": 0,
                "direction": "down",
            },
        },
    )
    active_id = await import_model(pool, settings, client, 7)

    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    assert row is not None
    assert (row.model_id, row.name, row.model_type, row.is_active) == (
        7,
        "model 7",
        "xgboost",
        True,
    )
    assert row.activated_at is not None
    assert row.target_kind == "time_based"
    assert (row.future_minutes, row.price_change_percent, row.target_direction) == (15, 0.0, "down")
    assert row.target_operator is None and row.target_variable == "price_close"
    assert row.features == tuple(FEATURES)
    assert row.phases == (1, 2)
    assert row.params["feature_engineering_windows"] == [5, 10]
    metrics = row.training_metrics
    assert metrics["accuracy"] == 0.81 and metrics["roc_auc"] == 0.77
    # Zeros stay zeros (the old service turned them into NULL).
    assert metrics["f1"] == 0.0 and metrics["mcc"] == 0.0 and metrics["recall"] == 0.0
    assert metrics["confusion_matrix"] == {"tp": 0, "tn": 50, "fp": 3, "fn": 7}
    assert metrics["simulated_profit_pct"] == -1.5 and metrics["fpr"] == 0.1
    # The file is in MODEL_STORAGE_PATH and hashes to the recorded sha256 of what was served.
    path = Path(row.file_path)
    assert path.parent == Path(settings.model_storage_path)
    served = training_service.models[7].file
    assert served is not None
    assert row.file_sha256 == _sha_of(path)
    assert row.file_sha256 == hashlib.sha256(served).hexdigest()
    assert row.file_state == "ok"
    assert _files(settings) == [path.name]
    await wait_for(
        lambda: {"active_model_id": active_id, "action": "imported"} in notes,
        what="imported notification",
    )


async def test_import_of_an_imported_model_is_refused_without_downloading_again(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    training_service.add_model(7, "random_forest", FEATURES)
    first = await import_model(pool, settings, client, 7)
    with pytest.raises(ModelImportError) as caught:
        await import_model(pool, settings, client, 7)
    assert status_of(caught.value.code) == 409 and caught.value.code == "already_imported"
    assert caught.value.details["active_model_id"] == first
    assert training_service.downloads(7) == 1
    assert await _count(pool) == 1
    assert len(_files(settings)) == 1


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"status": "TRAINING"}, "not_ready", "TRAINING, not READY"),
        ({"model_type": "logistic_regression"}, "unsupported_model_type", "logistic_regression"),
        ({"future_minutes": None}, "invalid_target", "future_minutes"),
    ],
)
async def test_a_model_the_service_cannot_run_is_refused_before_download(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
    overrides: dict[str, Any],
    code: str,
    words: str,
) -> None:
    model = training_service.add_model(7, "xgboost", FEATURES)
    model.info.update(overrides)
    error = await _refused(pool, settings, client, 7)
    assert (status_of(error.code), error.code) == (422, code)
    assert words in error.message
    assert training_service.downloads(7) == 0


async def test_unknown_feature_is_refused_naming_it(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    features = [*FEATURES, "moon_phase", "volume_ratio_10"]
    training_service.add_model(7, "random_forest", features)
    error = await _refused(pool, settings, client, 7)
    assert (status_of(error.code), error.code) == (422, "unknown_features")
    assert error.details["features"] == ["moon_phase"]
    assert "moon_phase" in error.message and "volume_ratio_10" not in error.details["features"]


class _Exploit:
    """Unpickling this runs a shell command: the allow-list must refuse it first."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["exploit", "truncated", "garbage"])
async def test_a_refused_file_leaves_no_row_and_no_file(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
    tmp_path: Path,
    kind: str,
) -> None:
    marker = tmp_path / "exploited"
    good = training_service.add_model(7, "xgboost", FEATURES).file
    assert good is not None
    data = {
        "exploit": pickle.dumps(_Exploit(marker)),
        "truncated": good[: len(good) // 2],
        "garbage": b"this is not a model file at all",
    }[kind]
    training_service.models[7].file = data
    error = await _refused(pool, settings, client, 7)
    assert (status_of(error.code), error.code) == (422, "file_refused")
    reason = error.details["reason"]
    expected = {"exploit": "system", "truncated": "truncated", "garbage": "unknown model file"}
    assert expected[kind] in reason, reason
    assert not marker.exists()


async def test_a_file_that_is_not_the_announced_model_type_is_refused(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    model = training_service.add_model(7, "random_forest", FEATURES)
    model.info["model_type"] = "xgboost"
    error = await _refused(pool, settings, client, 7)
    assert error.code == "file_refused"
    assert "random_forest" in error.message and "xgboost" in error.message


async def test_a_missing_file_at_the_training_service_is_an_error_not_a_placeholder(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    training_service.add_model(7, "xgboost", FEATURES).file = None
    error = await _refused(pool, settings, client, 7)
    assert status_of(error.code) == 404 and "/models/7/download" in error.message


async def test_training_service_down_is_an_error_naming_the_url(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    async with client_from_settings(settings.replace(training_service_api_url=url)) as down:
        error = await _refused(pool, settings, down, 7)
    assert (status_of(error.code), error.code) == (502, "training_service_unreachable")
    assert f"{url}/models/7" in error.message and "cannot connect" in error.message
    assert error.details["url"] == f"{url}/models/7"


async def test_the_models_own_feature_names_win_over_the_listed_ones_with_a_warning(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    trained_order = ["volume_sol", "price_roc_5", "price_close", "buy_pressure_ratio"]
    training_service.add_model(7, "random_forest", FEATURES, train_features=trained_order)
    with capture_logs() as logs:
        active_id = await import_model(pool, settings, client, 7)
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    assert row is not None and row.features == tuple(trained_order)
    warnings = [e for e in logs if e["log_level"] == "warning" and "disagree" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["model"] == trained_order


async def test_a_model_expecting_another_number_of_unnamed_features_is_refused(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    expected = json.loads((FIXTURES / "expected_probabilities.json").read_text())["xgboost"]
    # The golden XGBoost pickle does not name its 10 inputs; list only 9.
    training_service.add_file_model(
        7, FIXTURES / expected["file"], "xgboost", expected["features"][:9]
    )
    error = await _refused(pool, settings, client, 7)
    assert error.code == "feature_mismatch" and "9 features" in error.message
    assert "10 inputs" in error.message


async def test_golden_fixture_models_import_and_predict_like_the_training_service(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    expected = json.loads((FIXTURES / "expected_probabilities.json").read_text())
    for model_id, kind in ((1, "random_forest"), (2, "xgboost")):
        training_service.add_file_model(
            model_id,
            FIXTURES / expected[kind]["file"],
            kind,
            expected[kind]["features"],
            params={"use_engineered_features": True, "feature_engineering_windows": [5, 10, 15]},
        )
        active_id = await import_model(pool, settings, client, model_id)
        async with pool.acquire() as conn:
            row = await active_models.get_model(conn, active_id)
        assert row is not None
        assert row.features == tuple(expected[kind]["features"]) and row.model_type == kind
        # The stored file is the fixture itself and loads to a valid model.
        fixture_bytes = (FIXTURES / expected[kind]["file"]).read_bytes()
        assert row.file_sha256 == hashlib.sha256(fixture_bytes).hexdigest()
        loaded = load_model(row.file_path)
        proba = loaded.predict_proba(np.zeros((3, len(row.features))))
        assert proba.shape == (3, 2)
    assert await _count(pool) == 2


async def test_reload_downloads_a_deleted_file_again_and_shows_it(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
    notes: list[dict[str, Any]],
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    active_id = await import_model(pool, settings, client, 7)
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    assert row is not None

    # A file that is fine is only verified.
    result = await reload_model(pool, settings, client, active_id)
    assert not result.redownloaded and result.model.file_state == "ok"
    assert training_service.downloads(7) == 1

    os.unlink(row.file_path)
    result = await reload_model(pool, settings, client, active_id)
    assert result.redownloaded and "missing" in (result.reason or "")
    assert result.model.file_state == "redownloaded"
    assert training_service.downloads(7) == 2
    assert _sha_of(row.file_path) == row.file_sha256
    await wait_for(
        lambda: (
            [n["action"] for n in notes if n["active_model_id"] == active_id]
            == ["imported", "reloaded", "reloaded"]
        ),
        what="imported and two reloaded notifications",
    )

    # An altered file is replaced by the Training Service's.
    _write(row.file_path, b"tampered")
    result = await reload_model(pool, settings, client, active_id)
    assert result.redownloaded and "sha256" in (result.reason or "")
    assert _sha_of(row.file_path) == row.file_sha256


async def test_reload_with_the_file_gone_and_the_training_service_down_records_missing(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    active_id = await import_model(pool, settings, client, 7)
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    assert row is not None
    os.unlink(row.file_path)
    await training_service.stop()
    with pytest.raises(ModelImportError) as caught:
        await reload_model(pool, settings, client, active_id)
    assert caught.value.code == "training_service_unreachable"
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    assert row is not None and row.file_state == "missing"
    assert row.file_error is not None and "missing" in row.file_error
    assert "cannot connect" in row.file_error


async def test_update_metrics_copies_the_training_services_new_numbers(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    model = training_service.add_model(7, "xgboost", FEATURES)
    active_id = await import_model(pool, settings, client, 7)
    model.info.update(training_accuracy=0.9, roc_auc=0.0, simulated_profit_pct=12.5)
    row = await update_metrics(pool, client, active_id)
    assert row.training_metrics["accuracy"] == 0.9
    assert row.training_metrics["roc_auc"] == 0.0
    assert row.training_metrics["simulated_profit_pct"] == 12.5


async def test_delete_removes_the_row_its_predictions_and_its_file(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
    notes: list[dict[str, Any]],
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    active_id = await import_model(pool, settings, client, 7)
    async with pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        await add_prediction(conn, active_id, "MintA", now, prediction=1, probability=0.8)
    deleted = await delete_imported_model(pool, active_id)
    assert deleted.id == active_id
    assert await _count(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM predictions") == 0
    assert _files(settings) == []
    await wait_for(
        lambda: {"active_model_id": active_id, "action": "deleted"} in notes,
        what="deleted notification",
    )
    # And it can be imported again.
    again = await import_model(pool, settings, client, 7)
    assert again != active_id and len(_files(settings)) == 1


async def test_a_second_import_during_a_download_is_refused_as_busy(
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
    client: TrainingServiceClient,
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    gate = training_service.download_gate = anyio.Event()
    imported: list[int] = []

    async def first() -> None:
        imported.append(await import_model(pool, settings, client, 7))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await wait_for(lambda: training_service.downloads(7) == 1, what="first download in flight")
        # Refused at once, not queued behind the download.
        with anyio.fail_after(5), pytest.raises(ModelImportError) as caught:
            await import_model(pool, settings, client, 7)
        assert (status_of(caught.value.code), caught.value.code) == (409, "model_busy")
        gate.set()
    assert len(imported) == 1 and await _count(pool) == 1
    assert training_service.downloads(7) == 1 and len(_files(settings)) == 1
