"""The Training Service client against a real aiohttp server on 127.0.0.1.

The server is a small stand-in for the Training Service: it serves model
objects shaped like the real API and a model file trained in the fixture.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import joblib
import numpy as np
import pandas as pd
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from model_factory import fit_estimator
from ports import closed_port

from storage.clients.training_service import ModelInfo, TrainingServiceClient, TrainingServiceError
from storage.model_files.store import load_model

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]
SLOW_SECONDS = 5.0
CLIENT_TIMEOUT = 0.3  # for the tests of timeouts only
# The other failure tests must not race a busy 2-core CI box (a 404 once took > 0.3 s).
ROOMY_TIMEOUT = 10.0

# Model ids the stand-in treats specially.
MISSING, DELETED, FAILING, SLOW, NOT_JSON, CUT_OFF, STALLED = 404, 10, 500, 77, 66, 55, 33
INVALID = 12


def _model_object(model_id: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": model_id,
        "name": f"model {model_id}",
        "model_type": "random_forest",
        "status": "READY",
        "created_at": "2026-01-10T12:00:00Z",
        "updated_at": "2026-01-11T08:30:00+00:00",
        "is_deleted": False,
        "target_variable": "price_close",
        "target_operator": None,
        "target_value": None,
        "train_start": "2026-01-01T00:00:00",
        "train_end": "2026-01-09T00:00:00Z",
        "features": FEATURES,
        "phases": [1, 2],
        "params": {"use_engineered_features": True, "feature_engineering_windows": [5, 10]},
        "feature_importance": {"price_close": 0.4, "volume_sol": 0.6},
        "training_accuracy": 0.81,
        "training_f1": 0.0,
        "training_precision": "0.5",
        "training_recall": 0,
        "roc_auc": 0.77,
        "mcc": 0.0,
        "fpr": 0.1,
        "fnr": 0.2,
        "confusion_matrix": {"tp": 0, "tn": 50, "fp": 3, "fn": 7},
        "simulated_profit_pct": -1.5,
        "cv_scores": [0.7, 0.72],
        "cv_overfitting_gap": 0.0,
        "model_file_path": f"/models/model_{model_id}.pkl",
        "description": "test model",
        "future_minutes": 10,
        "price_change_percent": 5.0,
        "target_direction": "up",
    }
    base.update(overrides)
    return base


@dataclass
class StandIn:
    """What the stand-in serves and what it saw."""

    server: TestServer
    model_bytes: bytes
    estimator: Any
    frame: pd.DataFrame
    list_queries: list[dict[str, str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/api"))


def _build_app(standin: StandIn) -> web.Application:
    models = {
        7: _model_object(7),
        # Time-based model whose _time_based block overrides the flat fields,
        # including with zeros that must stay zeros.
        8: _model_object(
            8,
            model_type="xgboost",
            params={
                "_time_based": {
                    "enabled": True,
                    "future_minutes": 15,
                    "min_percent_change": 0,
                    "direction": "DOWN",
                },
            },
        ),
        # Classic model whose disabled _time_based block is ignored.
        9: _model_object(
            9,
            target_operator=">",
            target_value=0,
            params={"_time_based": {"enabled": False, "future_minutes": 99}},
        ),
        DELETED: _model_object(DELETED, is_deleted=True),
        11: _model_object(11, status="TRAINING"),
        INVALID: _model_object(INVALID, status="FAILED", target_operator="!="),
    }

    async def list_models(request: web.Request) -> web.Response:
        standin.list_queries.append(dict(request.query))
        selected = [
            m
            for m in models.values()
            if m["status"] == request.query.get("status", m["status"])
            and str(m["is_deleted"]).lower() == request.query.get("is_deleted", "false")
        ]
        return web.json_response([*selected, {"name": "broken entry without an id"}])

    async def get_model(request: web.Request) -> web.StreamResponse:
        model_id = int(request.match_info["id"])
        if model_id == FAILING:
            return web.Response(status=500, text="database is down")
        if model_id == SLOW:
            await anyio.sleep(SLOW_SECONDS)
        if model_id == NOT_JSON:
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        model = models.get(model_id)
        if model is None or model["is_deleted"]:
            return web.json_response({"detail": "Model not found"}, status=404)
        return web.json_response(model)

    async def download(request: web.Request) -> web.StreamResponse:
        model_id = int(request.match_info["id"])
        data = standin.model_bytes
        if model_id == FAILING:
            return web.Response(status=500, text="disk error")
        if model_id not in (7, CUT_OFF, STALLED):
            return web.json_response({"detail": "Model file not found"}, status=404)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="model_{model_id}_rf.pkl"',
            }
        )
        response.content_length = len(data)
        await response.prepare(request)
        half = len(data) // 2
        await response.write(data[:half])
        if model_id == CUT_OFF:
            assert request.transport is not None
            request.transport.close()  # the server dies mid-stream
            return response
        if model_id == STALLED:
            await anyio.sleep(SLOW_SECONDS)
        await response.write(data[half:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/models", list_models)
    app.router.add_get("/api/models/{id:\\d+}", get_model)
    app.router.add_get("/api/models/{id:\\d+}/download", download)
    return app


@pytest.fixture
async def standin(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> StandIn:
    estimator, frame = fit_estimator("random_forest", FEATURES, seed=11)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    standin = StandIn(
        server=None,  # type: ignore[arg-type]
        model_bytes=buffer.getvalue(),
        estimator=estimator,
        frame=frame,
    )
    standin.server = await aiohttp_server(_build_app(standin))
    return standin


# --------------------------------------------------------------------------- happy paths


async def test_list_models_asks_for_ready_models_and_parses_them(standin: StandIn) -> None:
    async with TrainingServiceClient(standin.base_url, timeout=5) as client:
        models = await client.list_models()

    assert standin.list_queries == [{"status": "READY", "is_deleted": "false"}]
    # The entry without an id is skipped, not fatal; TRAINING and deleted are filtered.
    assert sorted(m.id for m in models) == [7, 8, 9]
    assert all(isinstance(m, ModelInfo) for m in models)


async def test_get_model_parses_fields_and_keeps_zeros(standin: StandIn) -> None:
    async with TrainingServiceClient(standin.base_url, timeout=5) as client:
        model = await client.get_model(7)

    assert model.id == 7 and model.name == "model 7" and model.model_type == "random_forest"
    assert model.status == "READY" and model.is_deleted is False
    assert model.features == tuple(FEATURES)
    assert model.phases == (1, 2)
    assert model.use_engineered_features is True
    assert model.feature_engineering_windows == (5, 10)
    assert model.target_kind == "time_based" and model.is_time_based
    assert (model.future_minutes, model.price_change_percent, model.target_direction) == (
        10,
        5.0,
        "up",
    )
    assert model.metrics.f1 == 0.0 and model.metrics.recall == 0.0 and model.metrics.mcc == 0.0
    assert model.metrics.precision == 0.5
    assert model.metrics.cv_overfitting_gap == 0.0
    assert model.metrics.confusion_matrix == {"tp": 0, "tn": 50, "fp": 3, "fn": 7}
    assert model.metrics.cv_scores == [0.7, 0.72]
    assert model.created_at is not None and model.created_at.utcoffset() is not None
    assert model.train_start is not None and model.train_start.utcoffset() is not None
    assert model.raw["description"] == "test model"


async def test_time_based_block_wins_over_flat_fields_when_enabled(standin: StandIn) -> None:
    async with TrainingServiceClient(standin.base_url, timeout=5) as client:
        time_based = await client.get_model(8)
        classic = await client.get_model(9)

    assert time_based.target_kind == "time_based"
    assert time_based.future_minutes == 15
    assert time_based.price_change_percent == 0.0  # 0, not None and not the flat 5.0
    assert time_based.target_direction == "down"
    assert classic.target_kind == "classic"
    assert (classic.target_operator, classic.target_value) == (">", 0.0)
    assert classic.future_minutes == 10  # the disabled block changes nothing


async def test_download_model_streams_to_disk_and_loads(standin: StandIn, tmp_path: Path) -> None:
    directory = tmp_path / "models"
    async with TrainingServiceClient(standin.base_url, timeout=5) as client:
        path, sha256 = await client.download_model(7, directory)

    assert sha256 == hashlib.sha256(standin.model_bytes).hexdigest()
    assert path == directory / f"model_7_{sha256[:8]}.pkl"
    assert os.listdir(directory) == [path.name]
    model = await anyio.to_thread.run_sync(load_model, path)
    expected = standin.estimator.predict_proba(standin.frame)
    assert np.abs(model.predict_proba(standin.frame.to_numpy()) - expected).max() <= 1e-12


async def test_a_session_passed_in_is_left_open(standin: StandIn) -> None:
    async with aiohttp.ClientSession() as session:
        async with TrainingServiceClient(standin.base_url, session=session) as client:
            await client.get_model(7)
        assert not session.closed


# --------------------------------------------------------------------------- failures


async def _error_of(
    base_url: str, call: str, *args: Any, client_timeout: float = ROOMY_TIMEOUT
) -> TrainingServiceError:
    async with TrainingServiceClient(base_url, timeout=client_timeout) as client:
        with pytest.raises(TrainingServiceError) as failure:
            await getattr(client, call)(*args)
    return failure.value


@pytest.mark.parametrize("model_id", [MISSING, DELETED])
async def test_missing_or_deleted_model_is_a_404_error_naming_the_url(
    standin: StandIn, model_id: int
) -> None:
    error = await _error_of(standin.base_url, "get_model", model_id)

    assert error.status == 404
    assert f"{standin.base_url}/models/{model_id}" in str(error)
    assert "404 Not Found" in str(error)


async def test_server_error_names_the_url_status_and_body(standin: StandIn) -> None:
    error = await _error_of(standin.base_url, "get_model", FAILING)

    assert error.status == 500
    assert f"{standin.base_url}/models/{FAILING}" in str(error)
    assert "HTTP 500" in str(error) and "database is down" in str(error)


async def test_slow_server_times_out_with_the_url(standin: StandIn) -> None:
    started = time.monotonic()
    error = await _error_of(standin.base_url, "get_model", SLOW, client_timeout=CLIENT_TIMEOUT)

    assert time.monotonic() - started < SLOW_SECONDS / 2
    assert error.status is None
    assert f"{standin.base_url}/models/{SLOW}" in str(error)
    assert f"timed out after {CLIENT_TIMEOUT:g} s" in str(error)


async def test_refused_connection_names_the_url() -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/api"

    error = await _error_of(base_url, "list_models")

    assert error.status is None
    assert f"{base_url}/models?status=READY&is_deleted=false" in str(error)
    assert "cannot connect (Connection refused)" in str(error)


async def test_invalid_json_names_the_url(standin: StandIn) -> None:
    error = await _error_of(standin.base_url, "get_model", NOT_JSON)

    assert error.status == 200
    assert f"{standin.base_url}/models/{NOT_JSON}" in str(error)
    assert "invalid JSON" in str(error) and "proxy error" in str(error)


@pytest.mark.parametrize(
    ("model_id", "status", "reason"),
    [
        (CUT_OFF, None, "cut off"),
        (STALLED, None, "timed out"),
        (FAILING, 500, "HTTP 500"),
        (MISSING, 404, "404 Not Found"),
    ],
)
async def test_failed_download_leaves_no_file(
    standin: StandIn, tmp_path: Path, model_id: int, status: int | None, reason: str
) -> None:
    directory = tmp_path / "models"

    timeout = CLIENT_TIMEOUT if model_id == STALLED else ROOMY_TIMEOUT
    error = await _error_of(
        standin.base_url, "download_model", model_id, directory, client_timeout=timeout
    )

    assert error.status == status
    assert reason in str(error)
    assert f"{standin.base_url}/models/{model_id}/download" in str(error)
    assert not directory.exists() or os.listdir(directory) == []


async def test_invalid_model_object_is_an_error_naming_the_field(standin: StandIn) -> None:
    error = await _error_of(standin.base_url, "get_model", INVALID)

    assert f"{standin.base_url}/models/{INVALID}" in str(error)
    assert "invalid model object (target_operator: unknown operator '!=')" in str(error)


# --------------------------------------------------------------------------- parsing


def test_jsonb_columns_sent_as_text_and_numbers_as_strings_parse() -> None:
    time_based = (
        '{"_time_based": {"enabled": true, "future_minutes": "20", "min_percent_change": "0.0"}}'
    )
    model = ModelInfo.from_mapping(_model_object(7, params=time_based, target_value="0"))

    assert (model.future_minutes, model.price_change_percent) == (20, 0.0)
    assert model.target_value == 0.0
    assert model.target_direction == "up"  # not in the block: the flat field stays


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"id": None}, "id"),
        ({"features": ["a", 1]}, "features"),
        ({"phases": [True]}, "phases"),
        ({"future_minutes": 2.5}, "future_minutes"),
        ({"target_operator": "!="}, "target_operator"),
        ({"target_direction": "sideways"}, "target_direction"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"training_f1": "n/a"}, "training_f1"),
        ({"params": {"feature_engineering_windows": [5, 0]}}, "feature_engineering_windows"),
    ],
)
def test_invalid_fields_are_refused_by_name(overrides: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ModelInfo.from_mapping(_model_object(7, **overrides))
