"""The model-management REST routes: real HTTP, real PostgreSQL, a Training Service stub."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from http_json import call_json
from ports import closed_port
from prediction_rows import add_prediction
from training_service_stub import TrainingServiceStub, training_service
from waiting import wait_for

from actors.runtime.state import ServiceState
from storage.config import Settings
from storage.text_rules import MAX_NAME_LENGTH
from web.app import create_app
from web.context import AppContext
from web.openapi import documented_routes, registered_routes
from web.routes import models as routes_models

__all__ = ["training_service"]  # the fixture, imported for pytest

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def api(
    aiohttp_client: MakeClient,
    pool: asyncpg.Pool,
    settings: Settings,
    training_service: TrainingServiceStub,
) -> Client:
    settings = settings.replace(training_service_api_url=training_service.base_url)
    return await aiohttp_client(
        create_app(AppContext(settings=settings, pool=pool, state=ServiceState()))
    )


async def _import(api: Client, model_id: int) -> dict[str, Any]:
    status, body = await call_json(api, "POST", "/api/models/import", {"model_id": model_id})
    assert status == 201, body
    return dict(body)


def _exists(path: str | Path) -> bool:
    return Path(path).exists()


async def test_available_models_then_import_then_the_model_is_served(
    api: Client, training_service: TrainingServiceStub
) -> None:
    training_service.add_model(7, "xgboost", FEATURES, name="pump hunter")
    training_service.add_model(8, "random_forest", [*FEATURES, "moon_phase"])
    training_service.add_model(9, "xgboost", FEATURES, status="TRAINING")

    status, available = await call_json(api, "GET", "/api/models/available")
    assert status == 200
    assert [m["id"] for m in available["models"]] == [7, 8] and available["total"] == 2
    by_id = {m["id"]: m for m in available["models"]}
    assert by_id[7]["importable"] is True and by_id[7]["features_count"] == 4
    assert by_id[7]["target_kind"] == "time_based" and by_id[7]["future_minutes"] == 10
    assert by_id[7]["training_metrics"]["accuracy"] == 0.81
    assert by_id[8]["importable"] is False and "moon_phase" in by_id[8]["problems"][0]

    status, one = await call_json(api, "GET", "/api/models/available/7")
    assert status == 200 and one["name"] == "pump hunter" and one["imported"] is False

    created = await _import(api, 7)
    assert created["model_id"] == 7 and created["name"] == "pump hunter"
    assert created["is_active"] is True and created["features"] == FEATURES
    assert created["target_direction"] == "up" and created["price_change_percent"] == 5.0
    assert created["training_metrics"]["f1"] == 0.0
    assert created["file"]["state"] == "ok" and len(created["file"]["sha256"]) == 64

    status, available = await call_json(api, "GET", "/api/models/available")
    assert [m["id"] for m in available["models"]] == [8]
    status, one = await call_json(api, "GET", "/api/models/available/7")
    assert one["imported"] is True and one["active_model_id"] == created["id"]
    status, shown = await call_json(api, "GET", f"/api/models/{created['id']}")
    assert status == 200 and shown.pop("live")["predictions"] == 0
    assert shown == created


async def test_import_refusals_are_json_errors_with_the_reason(
    api: Client, training_service: TrainingServiceStub, settings: Settings
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    training_service.add_model(8, "random_forest", [*FEATURES, "moon_phase"])
    training_service.add_model(9, "xgboost", FEATURES, status="FAILED")
    await _import(api, 7)

    cases: list[tuple[Any, int, str, str]] = [
        ({"model_id": 7}, 409, "already_imported", "already imported"),
        ({"model_id": 8}, 422, "unknown_features", "moon_phase"),
        ({"model_id": 9}, 422, "not_ready", "FAILED"),
        ({"model_id": 404}, 404, "model_not_found", "/models/404"),
        ({"model_id": "7"}, 422, "invalid_field", "model_id"),
        ({"model_id": True}, 422, "invalid_field", "model_id"),
        ({}, 422, "invalid_field", "model_id"),
        ({"model_id": 7, "activate": True}, 422, "invalid_field", "activate"),
        ("{not json", 400, "invalid_json", "JSON"),
    ]
    for body, expected_status, code, words in cases:
        status, answer = await call_json(api, "POST", "/api/models/import", body)
        assert status == expected_status, (body, answer)
        assert answer["error"]["code"] == code, (body, answer)
        assert words in answer["error"]["message"], (body, answer)
    status, answer = await call_json(api, "POST", "/api/models/import", {"model_id": 8})
    assert answer["error"]["details"]["features"] == ["moon_phase"]
    # Nothing but model 7 was imported, and only its file is stored.
    status, listed = await call_json(api, "GET", "/api/models")
    assert [m["model_id"] for m in listed["models"]] == [7]
    assert len(os.listdir(settings.model_storage_path)) == 1


async def test_training_service_down_answers_502_naming_the_url(
    aiohttp_client: MakeClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    context = AppContext(
        settings=settings.replace(training_service_api_url=url), pool=pool, state=ServiceState()
    )
    api = await aiohttp_client(create_app(context))
    for method, path, body in (
        ("GET", "/api/models/available", None),
        ("GET", "/api/models/available/7", None),
        ("POST", "/api/models/import", {"model_id": 7}),
    ):
        status, answer = await call_json(api, method, path, body)
        assert status == 502, answer
        assert answer["error"]["code"] == "training_service_unreachable"
        assert url in answer["error"]["message"] and url in answer["error"]["details"]["url"]


async def test_activate_deactivate_rename_and_list_filters(
    api: Client, training_service: TrainingServiceStub, notes: list[dict[str, Any]]
) -> None:
    training_service.add_model(7, "xgboost", FEATURES, name="seven")
    training_service.add_model(8, "random_forest", FEATURES, name="eight")
    first, second = (await _import(api, 7))["id"], (await _import(api, 8))["id"]

    status, body = await call_json(api, "POST", f"/api/models/{second}/deactivate")
    assert status == 200 and body["is_active"] is False and body["changed"] is True
    assert body["deactivated_at"] is not None

    async def ids(path: str) -> list[int]:
        status, body = await call_json(api, "GET", path)
        assert status == 200, body
        assert body["total"] == len(body["models"])
        return [m["id"] for m in body["models"]]

    assert await ids("/api/models/active") == [first]
    assert await ids("/api/models/active?include_inactive=true") == [first, second]
    assert await ids("/api/models") == [first, second]
    assert await ids("/api/models?include_inactive=false") == [first]
    status, body = await call_json(api, "GET", "/api/models?include_inactive=maybe")
    assert status == 422 and "include_inactive" in body["error"]["message"]

    status, body = await call_json(api, "POST", f"/api/models/{second}/activate")
    assert body["is_active"] is True and body["changed"] is True
    status, body = await call_json(api, "POST", f"/api/models/{second}/activate")
    assert status == 200 and body["changed"] is False

    status, body = await call_json(
        api, "PATCH", f"/api/models/{first}/rename", {"name": "  Moon  "}
    )
    assert status == 200 and body["name"] == "Moon" and body["original_name"] == "seven"
    status, body = await call_json(api, "GET", f"/api/models/{first}")
    assert body["name"] == "Moon" and body["custom_name"] == "Moon"
    status, body = await call_json(api, "PATCH", f"/api/models/{first}/rename", {"name": None})
    assert status == 200 and body["name"] == "seven" and body["custom_name"] is None
    for bad in ({"name": 5}, {"name": "x" * (MAX_NAME_LENGTH + 1)}, {}, {"title": "x"}):
        status, body = await call_json(api, "PATCH", f"/api/models/{first}/rename", bad)
        assert status == 422, (bad, body)
        assert body["error"]["details"]["field"] in {"name", "title"}, body

    # Changes reach the model-sync channel; a no-op activation does not.
    expected = [
        {"active_model_id": second, "action": "deactivated"},
        {"active_model_id": second, "action": "activated"},
        {"active_model_id": first, "action": "renamed"},
        {"active_model_id": first, "action": "renamed"},
    ]
    await wait_for(
        lambda: [n for n in notes if n["action"] != "imported"] == expected,
        what="lifecycle notifications",
    )


async def test_unknown_ids_are_404_and_static_paths_are_never_taken_for_an_id(
    api: Client,
) -> None:
    for method, path in (
        ("GET", "/api/models/999"),
        ("POST", "/api/models/999/activate"),
        ("POST", "/api/models/999/deactivate"),
        ("POST", "/api/models/999/reload"),
        ("POST", "/api/models/999/update-metrics"),
        ("DELETE", "/api/models/999"),
        ("GET", "/api/models/abc"),
    ):
        status, body = await call_json(api, method, path)
        assert status == 404, (method, path, body)
    status, body = await call_json(api, "PATCH", "/api/models/999/rename", {"name": "x"})
    assert status == 404
    status, body = await call_json(api, "GET", "/api/models/active")
    assert status == 200 and body == {"models": [], "total": 0}


async def test_delete_removes_the_model_its_predictions_and_its_file(
    api: Client, training_service: TrainingServiceStub, pool: asyncpg.Pool
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    created = await _import(api, 7)
    async with pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        await add_prediction(conn, created["id"], "MintA", now, prediction=1, probability=0.8)
    status, body = await call_json(api, "GET", "/api/models")
    assert body["models"][0]["live"]["predictions"] == 1
    assert body["models"][0]["live"]["pending"] == 1
    status, body = await call_json(api, "DELETE", f"/api/models/{created['id']}")
    assert status == 200 and body == {"deleted": True, "id": created["id"], "model_id": 7}
    status, _ = await call_json(api, "GET", f"/api/models/{created['id']}")
    assert status == 404
    assert await pool.fetchval("SELECT count(*) FROM predictions") == 0
    assert not _exists(created["file"]["path"])
    status, available = await call_json(api, "GET", "/api/models/available")
    assert [m["id"] for m in available["models"]] == [7]


async def test_reload_redownloads_a_deleted_file_and_a_missing_file_blocks_activation(
    api: Client, training_service: TrainingServiceStub
) -> None:
    training_service.add_model(7, "xgboost", FEATURES)
    created = await _import(api, 7)
    model = created["id"]
    path = Path(created["file"]["path"])

    os.unlink(path)
    status, body = await call_json(api, "POST", f"/api/models/{model}/reload")
    assert status == 200, body
    assert body["reload"]["redownloaded"] is True and body["file"]["state"] == "redownloaded"
    assert _exists(path) and body["file"]["sha256"] == created["file"]["sha256"]

    # With the file gone and the Training Service down, reload says why and where.
    os.unlink(path)
    url = training_service.base_url
    await training_service.stop()
    status, body = await call_json(api, "POST", f"/api/models/{model}/reload")
    assert status == 502 and url in body["error"]["message"]
    status, body = await call_json(api, "GET", f"/api/models/{model}")
    assert body["file"]["state"] == "missing" and "missing" in body["file"]["error"]
    await call_json(api, "POST", f"/api/models/{model}/deactivate")
    status, body = await call_json(api, "POST", f"/api/models/{model}/activate")
    assert status == 409 and body["error"]["code"] == "model_file_unusable"


async def test_update_metrics_copies_the_new_training_metrics(
    api: Client, training_service: TrainingServiceStub
) -> None:
    stub_model = training_service.add_model(7, "xgboost", FEATURES)
    created = await _import(api, 7)
    stub_model.info.update(training_accuracy=0.93, mcc=0.0, confusion_matrix={"tp": 9})
    status, body = await call_json(api, "POST", f"/api/models/{created['id']}/update-metrics")
    assert status == 200, body
    assert body["training_metrics"]["accuracy"] == 0.93
    assert body["training_metrics"]["mcc"] == 0.0
    assert body["training_metrics"]["confusion_matrix"] == {"tp": 9}
    # Gone at the Training Service: a 404 that says where it looked.
    stub_model.info["is_deleted"] = True
    status, body = await call_json(api, "POST", f"/api/models/{created['id']}/update-metrics")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert "/models/7" in body["error"]["message"]


def test_model_routes_are_all_documented_in_openapi() -> None:
    app = web.Application()
    app.add_routes(routes_models.routes)
    mine = registered_routes(app)
    assert len(mine) == 12
    assert mine <= documented_routes()
