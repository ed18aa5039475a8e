"""Hostile model files through the real API: refused with a 422 that names the defect.

The Training Service is trusted to serve models, not to serve well-formed
ones: a file may be huge, expand into gigabytes, or carry trees whose indices
point outside their arrays (which crash scikit-learn and XGBoost in native
code). Each is imported through `POST /api/models/import` of the real service,
refused, leaves no file and no row, and the service goes on serving: a good
model imports right after.
"""

from __future__ import annotations

import math
import pickle
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from hostile_models import tampered_booster, tampered_forest
from service_runner import running_service
from structlog.testing import capture_logs
from training_service_stub import TrainingServiceStub, training_service

from storage.config import Settings

__all__ = ["training_service"]  # the fixture, imported for pytest

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]


@asynccontextmanager
async def api_of(
    settings: Settings, stub: TrainingServiceStub, **changes: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    """The real service (actors, API on 127.0.0.1) importing from the stub."""
    settings = settings.replace(training_service_api_url=stub.base_url, **changes)
    async with (
        running_service(settings) as service,
        aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
    ):
        yield http


async def _import(http: aiohttp.ClientSession, model_id: int) -> tuple[int, dict[str, Any]]:
    async with http.post("/api/models/import", json={"model_id": model_id}) as response:
        return response.status, await response.json()


def _stored(settings: Settings) -> list[str]:
    directory = Path(settings.model_storage_path)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def assert_refused_and_still_serving(
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    settings: Settings,
    stub: TrainingServiceStub,
    model_id: int,
    defect: str,
) -> dict[str, Any]:
    """The import answers 422 naming `defect` and leaves no row and no file of the model;
    the service still answers, and a good model imports right after."""
    status, body = await _import(http, model_id)
    assert status == 422, body
    assert body["error"]["code"] == "file_refused"
    assert defect in body["error"]["message"], body
    rows = await pool.fetchval("SELECT count(*) FROM active_models WHERE model_id = $1", model_id)
    assert rows == 0
    assert [name for name in _stored(settings) if f"model_{model_id}_" in name] == []

    good_id = 1000 + model_id
    stub.add_model(good_id, "random_forest", FEATURES, seed=model_id)
    status, created = await _import(http, good_id)
    assert status == 201, created
    # Every stored file belongs to an imported model: nothing half-written stays behind.
    assert len(_stored(settings)) == await pool.fetchval("SELECT count(*) FROM active_models")
    return dict(body)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


async def test_oversized_downloads_and_decompression_bombs_are_refused_at_the_cap(
    settings: Settings, pool: asyncpg.Pool, training_service: TrainingServiceStub
) -> None:
    # Announced by Content-Length: refused before a byte is stored.
    training_service.add_model(2, "random_forest", FEATURES, file=bytes(3 << 20))
    # Served gzip-encoded: 64 KB on the wire, 64 MB once decoded; refused at the cap.
    bomb = training_service.add_model(3, "random_forest", FEATURES, file=_gzip(bytes(64 << 20)))
    bomb.content_encoding = "gzip"
    assert len(bomb.file or b"") < (1 << 20)
    # joblib's gzip format: a small file whose pickle claims 64 MB of bytes.
    pickle_bomb = _gzip(b"\x80\x04\x8e" + struct.pack("<Q", 64 << 20) + bytes(64 << 20))
    training_service.add_model(4, "random_forest", FEATURES, file=pickle_bomb)

    # Each is refused by the cap itself (the message names it), not by running out of
    # memory or by a timeout: at most the cap's worth of bytes is ever produced.
    async with api_of(settings, training_service, model_max_bytes=2 << 20) as http:
        for model_id in (2, 3, 4):
            await assert_refused_and_still_serving(
                http, pool, settings, training_service, model_id, "MODEL_MAX_BYTES"
            )


async def test_malicious_random_forests_and_boosters_are_refused_and_the_service_lives_on(
    settings: Settings, pool: asyncpg.Pool, training_service: TrainingServiceStub
) -> None:
    # Real trained models with one number changed each; every class stays on the
    # unpickler's allow-list. The first two crashed the process in native code.
    hostile = {
        2: ("random_forest", tampered_forest(FEATURES, node=0, left_child=10**9)),
        3: ("random_forest", tampered_forest(FEATURES, tree=4, node=0, feature=57)),
        4: ("random_forest", tampered_forest(FEATURES, values_shape=(None, 1, 3))),
        5: ("xgboost", tampered_booster(FEATURES, tree=1, node=0, split_indices=10**6)),
        6: ("xgboost", tampered_booster(FEATURES, tree=1, node=2, split_conditions=math.nan)),
        7: ("xgboost", tampered_booster(FEATURES, tree=1, node=0, left_children=10**9)),
    }
    defects = {
        2: "tree 0 node 0: left child 1000000000 is out of range",
        3: "tree 4 node 0: feature index 57 is out of range",
        4: "value array has shape",
        5: "tree 1 node 0: split index 1000000 is out of range",
        6: "tree 1 node 2: split value nan is not finite",
        7: "tree 1 node 0: left child 1000000000 is out of range",
    }
    for model_id, (kind, data) in hostile.items():
        training_service.add_model(model_id, kind, FEATURES, file=data)

    async with api_of(settings, training_service) as http:
        with capture_logs() as logs:
            for model_id, defect in defects.items():
                await assert_refused_and_still_serving(
                    http, pool, settings, training_service, model_id, defect
                )
        async with http.get("/api/models") as response:
            assert response.status == 200
            listed = await response.json()
    assert sorted(m["model_id"] for m in listed["models"]) == [1000 + i for i in defects]
    # Each refusal leaves a warning naming the model and the defect for the operator.
    refused = {e["model_id"]: e["reason"] for e in logs if e["event"] == "model file refused"}
    assert all(defect in refused[model_id] for model_id, defect in defects.items())


class _Allocation:
    """Pickles as `builtins.bytearray(4 GiB)`: allowed names only, no tree to check."""

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return (bytearray, (4 << 30,))


async def test_what_the_checks_miss_fails_in_the_limited_probe_process_not_the_service(
    settings: Settings, pool: asyncpg.Pool, training_service: TrainingServiceStub
) -> None:
    training_service.add_model(2, "random_forest", FEATURES, file=pickle.dumps(_Allocation()))

    async with api_of(settings, training_service, model_probe_memory_bytes=500_000_000) as http:
        await assert_refused_and_still_serving(
            http, pool, settings, training_service, 2, "MODEL_PROBE_MEMORY_BYTES"
        )
