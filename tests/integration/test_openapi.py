"""`/api/openapi.json` documents exactly the routes the app serves, and no route hides another.

Scripts and the n8n flows are written against the document, so a route that is
missing from it, a documented route that does not exist, or a static path
swallowed by `/api/models/{id}` (the service being replaced had that bug) all
break someone's automation.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import asyncpg
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from app_server import serve, served
from training_service_stub import TrainingServiceStub

from storage.config import Settings
from web.app import create_app
from web.context import AppContext
from web.openapi import ERROR_SCHEMA, OPERATIONS, documented_routes, registered_routes

PATH_PARAM = re.compile(r"\{(\w+)\}")
# Concrete values for path parameters: what a script would put there.
EXAMPLE_VALUES = {
    "id": "7",
    "model_id": "7",
    "job_id": "7",
    "backtest_id": "7",
    "coin_id": "So1anaMint7pump",
}
HEALTH_PATHS = {"/health", "/api/health"}


async def _fetch_document(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document: dict[str, Any] = await response.json()
    return document


def _served_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


async def test_every_registered_route_is_documented_and_every_documented_route_exists(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    app = create_app(AppContext(settings=settings, pool=pool))
    async with serve(app) as base:
        document = await _fetch_document(base)
    registered = registered_routes(app)
    in_document = _served_operations(document)
    assert registered - in_document == set(), "registered but not in /api/openapi.json"
    assert in_document - registered == set(), "documented but no such route"
    assert documented_routes() == in_document
    # Every path of CONTRACTS.md section 5 is among them.
    contract = {
        ("GET", "/api/models/available"),
        ("GET", "/api/models/available/{model_id}"),
        ("POST", "/api/models/import"),
        ("GET", "/api/models"),
        ("GET", "/api/models/active"),
        ("GET", "/api/models/{id}"),
        ("POST", "/api/models/{id}/activate"),
        ("POST", "/api/models/{id}/deactivate"),
        ("POST", "/api/models/{id}/reload"),
        ("PATCH", "/api/models/{id}/rename"),
        ("PATCH", "/api/models/{id}/alert-config"),
        ("GET", "/api/models/{id}/ignore-settings"),
        ("PATCH", "/api/models/{id}/ignore-settings"),
        ("GET", "/api/models/{id}/max-log-entries"),
        ("PATCH", "/api/models/{id}/max-log-entries"),
        ("GET", "/api/models/{id}/n8n-status"),
        ("GET", "/api/models/{id}/statistics"),
        ("POST", "/api/models/{id}/update-metrics"),
        ("DELETE", "/api/models/{id}"),
        ("POST", "/api/predict"),
        ("GET", "/api/predictions"),
        ("GET", "/api/predictions/latest/{coin_id}"),
        ("GET", "/api/models/{id}/coins/{coin_id}/details"),
        ("DELETE", "/api/models/{id}/predictions"),
        ("GET", "/api/alerts/statistics"),
        ("GET", "/health"),
        ("GET", "/api/stats"),
        ("GET", "/metrics"),
        ("GET", "/api/config"),
        ("GET", "/api/openapi.json"),
    }
    assert contract - registered == set()


def _openapi_31_meta_schema() -> dict[str, Any]:
    """The official OpenAPI 3.1 schema, as schemathesis bundles it (no network at test time)."""
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    schema: dict[str, Any] = definitions.OPENAPI_31
    return schema


async def test_document_is_valid_openapi_3_1(settings: Settings, pool: asyncpg.Pool) -> None:
    async with served(settings, pool) as base:
        document = await _fetch_document(base)
    assert document["openapi"].startswith("3.1.")
    errors = sorted(
        jsonschema.Draft202012Validator(_openapi_31_meta_schema()).iter_errors(document),
        key=lambda e: list(e.absolute_path),
    )
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    # Every schema inside is a valid JSON Schema 2020-12 (the meta-schema does not look inside).
    operation_ids: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            operation_ids.append(operation["operationId"])
            for parameter in operation.get("parameters", []):
                jsonschema.Draft202012Validator.check_schema(parameter["schema"])
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                jsonschema.Draft202012Validator.check_schema(media["schema"])
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), where
                for media in response.get("content", {}).values():
                    jsonschema.Draft202012Validator.check_schema(media["schema"])
    assert len(operation_ids) == len(set(operation_ids)), "operationId must be unique"


async def test_path_parameters_errors_and_auth_are_declared_consistently(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with served(settings, pool) as base:
        document = await _fetch_document(base)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    for path, operations in document["paths"].items():
        in_template = set(PATH_PARAM.findall(path))
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
            assert set(declared) == in_template, where
            assert all(p["required"] for p in declared.values()), where
            for name, parameter in declared.items():
                if name in {"id", "model_id", "job_id"}:
                    # Typed ids: the reason a static path can never be taken for one.
                    assert parameter["schema"]["type"] == "integer", where
            mutating = method.upper() in {"POST", "PATCH", "DELETE"}
            assert (operation.get("security") == [{"bearer": []}]) is mutating, where
            assert ("401" in operation["responses"]) is mutating, where
            for status, response in operation["responses"].items():
                if int(status) < 400 or (path in HEALTH_PATHS and status == "503"):
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR_SCHEMA, f"{where} {status}"


def _concrete(path: str) -> str:
    return PATH_PARAM.sub(lambda m: EXAMPLE_VALUES[m.group(1)], path)


async def test_each_documented_path_is_answered_by_its_own_route(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """No shadowing: `/api/models/active` is not `/api/models/{id}`, and so on, for all."""
    app = create_app(AppContext(settings=settings, pool=pool))
    app.freeze()
    for op in OPERATIONS:
        url = _concrete(op.path)
        request = make_mocked_request(op.method, url, app=app)
        match = await app.router.resolve(request)
        assert match.http_exception is None, f"{op.method} {url} is not routed"
        resource = match.route.resource
        assert resource is not None
        info = resource.get_info()
        raw = str(info.get("path") or info.get("formatter") or "")
        template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", raw)
        assert template == op.path, f"{op.method} {url} is answered by {template}"
        for name, value in match.items():
            assert value == EXAMPLE_VALUES[name], f"{op.method} {url}: {name}={value}"
    # A non-numeric id is no model: the router answers 404 rather than a handler guessing.
    for url in ("/api/models/abc", "/api/models/7abc/activate", "/api/webhooks/x/retry"):
        method = "POST" if url.endswith(("activate", "retry")) else "GET"
        match = await app.router.resolve(make_mocked_request(method, url, app=app))
        assert isinstance(match.http_exception, web.HTTPNotFound), url


async def test_static_model_paths_reach_their_handlers_over_http(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with TrainingServiceStub() as training:
        training.add_model(31, "xgboost", ["price_close", "volume_sol"], file=b"unused")
        settings = settings.replace(training_service_api_url=training.base_url)
        async with served(settings, pool) as base, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/models/available") as response:
                assert response.status == 200
                body = await response.json()
            assert [m["id"] for m in body["models"]] == [31]
            async with http.get(f"{base}/api/models/active") as response:
                assert response.status == 200
                assert await response.json() == {"models": [], "total": 0}
            async with http.get(f"{base}/api/models/abc") as response:
                assert response.status == 404
                error = (await response.json())["error"]
                assert set(error) == {"code", "message", "details"}
                assert error["code"] == "not_found"
