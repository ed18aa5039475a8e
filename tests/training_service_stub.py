"""A small Training Service on 127.0.0.1 for tests, serving real model files.

It speaks the three endpoints of CONTRACTS.md section 1 (list READY models,
one model, download) with model objects shaped like the real API, and files
trained by `model_factory.train_model` (or any bytes you give it: a corrupt
file, a fixture pickle). Tests change what it serves between calls through
`models`, and read what it was asked through `requests`.

    async with TrainingServiceStub() as ts:
        ts.add_model(7, "xgboost", ["price_close", "volume_sol"])
        settings = settings.replace(training_service_api_url=ts.base_url)

or, as a fixture, `from training_service_stub import training_service` in a
test module (pytest finds imported fixtures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from model_factory import ModelKind, train_model

__all__ = ["StubModel", "TrainingServiceStub", "model_object", "training_service"]

DEFAULT_FEATURES = ("price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5")


def model_object(model_id: int, **overrides: Any) -> dict[str, Any]:
    """A Training Service model object (time-based, READY) with every contract field."""
    obj: dict[str, Any] = {
        "id": model_id,
        "name": f"model {model_id}",
        "model_type": "xgboost",
        "status": "READY",
        "created_at": "2026-01-10T12:00:00Z",
        "updated_at": "2026-01-11T08:30:00Z",
        "is_deleted": False,
        "target_variable": "price_close",
        "target_operator": None,
        "target_value": None,
        "train_start": "2026-01-01T00:00:00Z",
        "train_end": "2026-01-09T00:00:00Z",
        "features": list(DEFAULT_FEATURES),
        "phases": [1, 2],
        "params": {"use_engineered_features": True, "feature_engineering_windows": [5, 10]},
        "feature_importance": None,
        "training_accuracy": 0.81,
        "training_f1": 0.0,
        "training_precision": 0.5,
        "training_recall": 0.0,
        "roc_auc": 0.77,
        "mcc": 0.0,
        "fpr": 0.1,
        "fnr": 0.2,
        "confusion_matrix": {"tp": 0, "tn": 50, "fp": 3, "fn": 7},
        "simulated_profit_pct": -1.5,
        "cv_scores": [0.7, 0.72],
        "cv_overfitting_gap": 0.0,
        "model_file_path": f"/models/model_{model_id}.pkl",
        "description": f"test model {model_id}",
        "future_minutes": 10,
        "price_change_percent": 5.0,
        "target_direction": "up",
    }
    obj.update(overrides)
    return obj


@dataclass
class StubModel:
    """One model: its API object and its file (None: the download answers 404)."""

    info: dict[str, Any]
    file: bytes | None
    filename: str
    # Sent as the Content-Encoding of the download (`file` is then already encoded).
    content_encoding: str | None = None


@dataclass
class TrainingServiceStub:
    """The stand-in server. `base_url` is what TRAINING_SERVICE_API_URL would be."""

    models: dict[int, StubModel] = field(default_factory=dict)
    # (method, path with query) of every request, in order.
    requests: list[str] = field(default_factory=list)
    # When set, downloads wait for it (after being recorded in `requests`): a download
    # that is in flight for as long as the test needs.
    download_gate: anyio.Event | None = None
    _server: TestServer | None = None

    # ---- what it serves

    def add_model(
        self,
        model_id: int,
        kind: ModelKind = "xgboost",
        features: Sequence[str] = DEFAULT_FEATURES,
        *,
        file: bytes | None = None,
        train_features: Sequence[str] | None = None,
        seed: int = 0,
        **overrides: Any,
    ) -> StubModel:
        """Serve a model; its file is trained now on `train_features` (default: `features`)
        unless `file` is given. Keyword overrides change fields of the model object."""
        if file is None:
            file = train_model(kind, list(train_features or features), seed=seed)
        info = model_object(model_id, model_type=kind, features=list(features), **overrides)
        model = StubModel(info=info, file=file, filename=f"model_{model_id}_{kind}.pkl")
        self.models[model_id] = model
        return model

    def add_file_model(
        self, model_id: int, path: str | Path, kind: ModelKind, features: Sequence[str], **kw: Any
    ) -> StubModel:
        """Serve an existing model file (a fixture pickle) under a model object."""
        return self.add_model(model_id, kind, features, file=Path(path).read_bytes(), **kw)

    def downloads(self, model_id: int) -> int:
        return self.requests.count(f"GET /api/models/{model_id}/download")

    # ---- lifecycle

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stub first"
        return str(self._server.make_url("/api"))

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_get("/api/models", self._list)
        app.router.add_get(r"/api/models/{id:\d+}", self._one)
        app.router.add_get(r"/api/models/{id:\d+}/download", self._download)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- handlers (the real service's behaviour: filters, 404 for deleted)

    def _seen(self, request: web.Request) -> None:
        self.requests.append(f"{request.method} {request.path_qs}")

    async def _list(self, request: web.Request) -> web.Response:
        self._seen(request)
        status = request.query.get("status")
        deleted = request.query.get("is_deleted")
        found = [
            m.info
            for _, m in sorted(self.models.items())
            if (status is None or m.info.get("status") == status)
            and (deleted is None or str(bool(m.info.get("is_deleted"))).lower() == deleted)
        ]
        return web.json_response(found)

    def _get(self, request: web.Request) -> StubModel:
        model = self.models.get(int(request.match_info["id"]))
        if model is None or model.info.get("is_deleted"):
            raise web.HTTPNotFound(text='{"detail": "Model not found"}')
        return model

    async def _one(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response(self._get(request).info)

    async def _download(self, request: web.Request) -> web.Response:
        self._seen(request)
        model = self._get(request)
        if self.download_gate is not None:
            await self.download_gate.wait()
        if model.file is None:
            raise web.HTTPNotFound(text='{"detail": "Model file not found"}')
        headers = {"Content-Disposition": f'attachment; filename="{model.filename}"'}
        if model.content_encoding is not None:
            headers["Content-Encoding"] = model.content_encoding
        return web.Response(
            body=model.file, content_type="application/octet-stream", headers=headers
        )


@pytest.fixture
async def training_service() -> AsyncIterator[TrainingServiceStub]:
    """A running stub with no models; add them in the test."""
    async with TrainingServiceStub() as stub:
        yield stub
