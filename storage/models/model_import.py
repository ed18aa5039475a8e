"""Importing a Training Service model, and keeping its file usable (reload, metrics, delete).

An import either completes (file stored and checksummed, model loaded and
probed, features checked, row inserted and NOTIFY sent in one transaction) or
leaves nothing behind: no row, no file, never a placeholder model.

Import, reload and delete of one Training Service model are serialized by a
PostgreSQL advisory lock keyed on `ml_models.id` (held on the connection that
does the writes), so a delete can never remove the file a concurrent re-import
has just downloaded, and two imports of the same model cannot race.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import anyio
import asyncpg
import structlog

from features.matrix import FeatureSpec, UnknownFeatureError
from storage.clients.training_service import ModelInfo, TrainingServiceClient, TrainingServiceError
from storage.config import Settings
from storage.errors import StorageError
from storage.model_files.probe import probe_in_child
from storage.model_files.store import LoadedModel, ModelFileError, file_sha256, load_model
from storage.models import active_models
from storage.models.active_models import ActiveModelRow, NewActiveModel
from storage.text_rules import MAX_NAME_LENGTH, text_problem

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "CheckedModel",
    "ModelImportError",
    "ReloadResult",
    "client_from_settings",
    "delete_imported_model",
    "fetch_model_info",
    "import_model",
    "load_checked_model",
    "model_lock",
    "preflight_problems",
    "reload_model",
    "training_metrics_of",
    "training_service_failure",
    "update_metrics",
]

log = structlog.get_logger(__name__)

SUPPORTED_MODEL_TYPES: Final = ("random_forest", "xgboost")
# Advisory lock class "PPMF" (pump-predictor model file); the second key is the model id.
_LOCK_CLASS: Final = 0x50504D46
_INT4: Final = 2**31 - 1


class ModelImportError(StorageError):
    """An import, reload or metrics refresh refused.

    `code` is stable for scripts: already_imported, model_busy, not_found,
    model_not_found, not_ready, unsupported_model_type, invalid_target,
    unknown_features, invalid_features, feature_mismatch, file_refused,
    training_service_unreachable, training_service_error.
    """

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


def client_from_settings(
    settings: Settings, session: aiohttp.ClientSession | None = None
) -> TrainingServiceClient:
    return TrainingServiceClient(
        settings.training_service_api_url,
        timeout=settings.training_service_timeout_seconds,
        session=session,
    )


@asynccontextmanager
async def model_lock(pool: asyncpg.Pool, model_id: int) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection holding the file lock of one Training Service model.

    Refuses (409 model_busy) instead of waiting: the holder may be downloading
    for as long as the Training Service timeout.
    """
    key = int(model_id) % _INT4
    async with pool.acquire() as conn:
        locked = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, key)
        if not locked:
            raise ModelImportError(
                "model_busy",
                f"model {model_id} is being imported, reloaded or deleted right now; try again",
                details={"model_id": model_id},
            )
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, key)


# --------------------------------------------------------------------------- metadata


def training_metrics_of(info: ModelInfo) -> dict[str, Any]:
    """The training metrics as stored in `active_models.training_metrics` (0 stays 0)."""
    m = info.metrics
    return {
        "accuracy": m.accuracy,
        "f1": m.f1,
        "precision": m.precision,
        "recall": m.recall,
        "roc_auc": m.roc_auc,
        "mcc": m.mcc,
        "fpr": m.fpr,
        "fnr": m.fnr,
        "confusion_matrix": m.confusion_matrix,
        "simulated_profit_pct": m.simulated_profit_pct,
        "cv_scores": m.cv_scores,
        "cv_overfitting_gap": m.cv_overfitting_gap,
        "feature_importance": info.feature_importance,
        "train_start": info.train_start.isoformat() if info.train_start else None,
        "train_end": info.train_end.isoformat() if info.train_end else None,
        "trained_at": info.created_at.isoformat() if info.created_at else None,
    }


def _text_errors(info: ModelInfo, details: dict[str, Any]) -> list[ModelImportError]:
    """Text we would store but cannot, or would not show: the one name cap of the API
    (a rename is held to it too), and characters PostgreSQL refuses."""
    errors: list[ModelImportError] = []
    if len(info.name) > MAX_NAME_LENGTH:
        errors.append(
            ModelImportError(
                "invalid_name",
                f"model {info.id}: name: {len(info.name)} characters, at most "
                f"{MAX_NAME_LENGTH} allowed",
                details={**details, "field": "name"},
            )
        )
    for field, value in (("name", info.name), ("description", info.description)):
        problem = text_problem(value) if value else None
        if problem is not None:
            errors.append(
                ModelImportError(
                    "invalid_text",
                    f"model {info.id}: {field}: {problem}",
                    details={**details, "field": field},
                )
            )
    return errors


def _metadata_errors(info: ModelInfo) -> list[ModelImportError]:
    """What refuses this model before its file is even downloaded."""
    errors: list[ModelImportError] = []
    details: dict[str, Any] = {"model_id": info.id}
    if info.is_deleted:
        errors.append(
            ModelImportError(
                "not_ready",
                f"model {info.id} is deleted at the Training Service",
                details=details,
            )
        )
    errors.extend(_text_errors(info, details))
    if info.status != "READY":
        errors.append(
            ModelImportError(
                "not_ready",
                f"model {info.id} is {info.status or 'without a status'}, not READY",
                details={**details, "status": info.status},
            )
        )
    if info.model_type not in SUPPORTED_MODEL_TYPES:
        errors.append(
            ModelImportError(
                "unsupported_model_type",
                f"model {info.id} has model_type {info.model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}",
                details={**details, "model_type": info.model_type},
            )
        )
    if info.is_time_based:
        required = {
            "future_minutes": info.future_minutes,
            "price_change_percent": info.price_change_percent,
            "target_direction": info.target_direction,
        }
    else:
        required = {"target_variable": info.target_variable, "target_value": info.target_value}
    missing = [name for name, value in required.items() if value is None]
    if missing:
        kind = "time-based" if info.is_time_based else "classic"
        errors.append(
            ModelImportError(
                "invalid_target",
                f"model {info.id} has a {kind} target without {', '.join(missing)}",
                details={**details, "fields": missing},
            )
        )
    if info.is_time_based and info.future_minutes is not None and info.future_minutes <= 0:
        errors.append(
            ModelImportError(
                "invalid_target",
                f"model {info.id}: future_minutes must be positive, got {info.future_minutes}",
                details={**details, "fields": ["future_minutes"]},
            )
        )
    return errors


def _engine_check(model_id: int, features: Sequence[str], params: dict[str, Any]) -> None:
    try:
        FeatureSpec.from_model(features, params)
    except UnknownFeatureError as exc:
        raise ModelImportError(
            "unknown_features",
            f"model {model_id}: {exc}",
            details={"model_id": model_id, "features": exc.names},
        ) from exc
    except ValueError as exc:
        raise ModelImportError(
            "invalid_features",
            f"model {model_id}: {exc}",
            details={"model_id": model_id},
        ) from exc


def preflight_problems(info: ModelInfo) -> list[str]:
    """Reasons an import of this model would be refused, as far as metadata tells."""
    problems = [e.message for e in _metadata_errors(info)]
    try:
        _engine_check(info.id, info.features, info.params)
    except ModelImportError as exc:
        problems.append(exc.message)
    return problems


def training_service_failure(
    exc: TrainingServiceError, model_id: int | None = None
) -> ModelImportError:
    """A Training Service failure as an API answer: 404 stays 404, the rest is a 502."""
    details: dict[str, Any] = {"url": exc.url}
    if model_id is not None:
        details["model_id"] = model_id
    if exc.status is None:
        return ModelImportError("training_service_unreachable", str(exc), details=details)
    if exc.status == 404:
        return ModelImportError("model_not_found", str(exc), details=details)
    return ModelImportError(
        "training_service_error", str(exc), details={**details, "status": exc.status}
    )


async def fetch_model_info(client: TrainingServiceClient, model_id: int) -> ModelInfo:
    try:
        return await client.get_model(model_id)
    except TrainingServiceError as exc:
        raise training_service_failure(exc, model_id) from exc


# --------------------------------------------------------------------------- files


def _file_refused(model_id: int, exc: Exception) -> ModelImportError:
    # A file the Training Service served that we refuse may be an attack: always leave a trace.
    log.warning("model file refused", model_id=model_id, reason=str(exc))
    return ModelImportError(
        "file_refused",
        f"model {model_id}: the model file was refused: {exc}",
        details={"model_id": model_id, "reason": str(exc)},
    )


async def _load(model_id: int, path: Path, settings: Settings) -> LoadedModel:
    """Load a file only after a limited child process loaded and probed it unharmed."""
    try:
        await anyio.to_thread.run_sync(
            functools.partial(
                probe_in_child,
                path,
                max_bytes=settings.model_max_bytes,
                memory_bytes=settings.model_probe_memory_bytes,
                timeout_seconds=settings.model_probe_timeout_seconds,
            )
        )
        return await anyio.to_thread.run_sync(
            functools.partial(load_model, path, max_bytes=settings.model_max_bytes)
        )
    except ModelFileError as exc:
        raise _file_refused(model_id, exc) from exc


def _check_kind(model_id: int, model_type: str, loaded: LoadedModel) -> None:
    if loaded.kind != model_type:
        raise _file_refused(
            model_id,
            ModelFileError(
                f"the file holds a {loaded.kind} model but the Training Service says {model_type}"
            ),
        )


def _reconcile_features(
    model_id: int, listed: Sequence[str], loaded: LoadedModel
) -> tuple[str, ...]:
    """The features in the order the model is fed: its own names win over the listed ones."""
    names = loaded.feature_names_in
    if names is not None:
        if list(names) != list(listed):
            log.warning(
                "the model's own feature names disagree with the Training Service's feature "
                "list; using the model's names and order",
                model_id=model_id,
                listed=list(listed),
                model=list(names),
                only_listed=sorted(set(listed) - set(names)),
                only_in_model=sorted(set(names) - set(listed)),
            )
        return tuple(names)
    if loaded.n_features_in != len(listed):
        raise ModelImportError(
            "feature_mismatch",
            f"model {model_id}: the Training Service lists {len(listed)} features but the "
            f"model file expects {loaded.n_features_in} inputs (and does not name them)",
            details={
                "model_id": model_id,
                "features": list(listed),
                "n_features_in": loaded.n_features_in,
            },
        )
    return tuple(listed)


def _unlink_quietly(path: Path) -> None:
    """Synchronous on purpose: it also runs while the task is being cancelled."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove a model file", path=str(path), error=str(exc))


async def _download(
    client: TrainingServiceClient, settings: Settings, model_id: int
) -> tuple[Path, str]:
    try:
        return await client.download_model(
            model_id, settings.model_storage_path, max_bytes=settings.model_max_bytes
        )
    except TrainingServiceError as exc:
        if exc.status == 200 and isinstance(exc.__cause__, ModelFileError):
            raise _file_refused(model_id, exc.__cause__) from exc
        raise training_service_failure(exc, model_id) from exc


# --------------------------------------------------------------------------- import


async def import_model(
    pool: asyncpg.Pool, settings: Settings, client: TrainingServiceClient, model_id: int
) -> int:
    """Import a READY Training Service model; return the new `active_models.id`.

    Raises `ModelImportError`; on any failure no row is inserted and no file is left.
    """
    async with model_lock(pool, model_id) as conn:
        existing = await active_models.get_model_by_model_id(conn, model_id)
        if existing is not None:
            raise _already_imported(model_id, existing.id)
        info = await fetch_model_info(client, model_id)
        errors = _metadata_errors(info)
        if errors:
            raise errors[0]
        path, sha256 = await _download(client, settings, model_id)
        keep_file = False
        try:
            loaded = await _load(model_id, path, settings)
            if loaded.sha256 != sha256:  # changed on disk between store and load
                raise _file_refused(
                    model_id, ModelFileError(f"{path}: changed while being imported")
                )
            _check_kind(model_id, info.model_type, loaded)
            features = _reconcile_features(model_id, info.features, loaded)
            _engine_check(model_id, features, info.params)
            new = NewActiveModel(
                model_id=info.id,
                name=info.name,
                model_type=info.model_type,
                description=info.description,
                target_kind=info.target_kind,
                target_variable=info.target_variable,
                target_operator=info.target_operator,
                target_value=info.target_value,
                future_minutes=info.future_minutes,
                price_change_percent=info.price_change_percent,
                target_direction=info.target_direction,
                features=features,
                phases=info.phases,
                params=info.params,
                training_metrics=training_metrics_of(info),
                file_path=str(path),
                file_sha256=sha256,
            )
            try:
                # Shielded: a cancellation during COMMIT would leave us not knowing whether
                # the row exists, and the cleanup below would remove a committed model's file.
                with anyio.CancelScope(shield=True):
                    async with conn.transaction():
                        row = await active_models.insert_model(conn, new)
            except asyncpg.UniqueViolationError:
                # Imported by something that does not take our lock: keep its file.
                other = await active_models.get_model_by_model_id(conn, model_id)
                keep_file = other is not None and other.file_path == str(path)
                raise _already_imported(model_id, other.id if other else None) from None
        except BaseException:
            if not keep_file:
                _unlink_quietly(path)
            raise
    log.info(
        "model imported",
        model_id=model_id,
        active_model_id=row.id,
        model_type=row.model_type,
        features=len(row.features),
        path=row.file_path,
        repairs=list(loaded.repairs),
    )
    return row.id


def _already_imported(model_id: int, active_model_id: int | None) -> ModelImportError:
    return ModelImportError(
        "already_imported",
        f"model {model_id} is already imported"
        + (f" as active model {active_model_id}" if active_model_id is not None else ""),
        details={"model_id": model_id, "active_model_id": active_model_id},
    )


def _not_found(active_model_id: int) -> ModelImportError:
    return ModelImportError(
        "not_found",
        f"model {active_model_id} not found",
        details={"resource": "model", "id": active_model_id},
    )


# --------------------------------------------------------------------------- reload


@dataclass(frozen=True, slots=True)
class ReloadResult:
    model: ActiveModelRow
    redownloaded: bool
    # Why the local file was not used (missing, checksum mismatch), when it was re-downloaded.
    reason: str | None
    repairs: tuple[str, ...]


def _local_problem(path: Path, expected_sha256: str) -> str | None:
    if not path.is_file():
        return f"the model file {path} is missing"
    found = file_sha256(path)
    if found != expected_sha256:
        return f"the model file {path} has sha256 {found}, expected {expected_sha256}"
    return None


def _check_same_features(row: ActiveModelRow, loaded: LoadedModel) -> None:
    names = loaded.feature_names_in
    if (names is not None and tuple(names) != row.features) or loaded.n_features_in != len(
        row.features
    ):
        raise ModelImportError(
            "feature_mismatch",
            f"model {row.model_id}: the model file expects "
            f"{names if names is not None else f'{loaded.n_features_in} features'}, "
            f"but the model was imported with {list(row.features)}",
            details={"model_id": row.model_id, "features": list(row.features)},
        )


async def reload_model(
    pool: asyncpg.Pool,
    settings: Settings,
    client: TrainingServiceClient,
    active_model_id: int,
    *,
    notify_action: str | None = "reloaded",
) -> ReloadResult:
    """Re-verify the model file, re-download it when missing or altered, load and probe it.

    On success the row records the file (state `ok`, or `redownloaded`) and
    `notify_action` is NOTIFYed in the same transaction; pass None to only make
    sure the file is usable (the model-sync actor, which already loads on its
    own). On failure the row records `missing` / `error` with the reason, the
    model object in memory stays as it was, and `ModelImportError` is raised.
    """
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_model_id)
    if row is None:
        raise _not_found(active_model_id)
    async with model_lock(pool, row.model_id) as conn:
        row = await active_models.get_model(conn, active_model_id)
        if row is None:
            raise _not_found(active_model_id)
        old_path = Path(row.file_path)
        problem = await anyio.to_thread.run_sync(_local_problem, old_path, row.file_sha256)
        path, sha256 = old_path, row.file_sha256
        if problem is not None:
            log.warning(
                "model file not usable; downloading it again",
                active_model_id=row.id,
                model_id=row.model_id,
                problem=problem,
            )
            try:
                path, sha256 = await _download(client, settings, row.model_id)
            except ModelImportError as exc:
                state = "missing" if problem.endswith("is missing") else "error"
                await active_models.set_file_state(
                    conn, row.id, state, f"{problem}; download failed: {exc.message}"
                )
                raise
            if sha256 != row.file_sha256:
                log.warning(
                    "the Training Service now serves a different file for this model",
                    active_model_id=row.id,
                    model_id=row.model_id,
                    recorded_sha256=row.file_sha256,
                    new_sha256=sha256,
                )
        try:
            loaded = await _load(row.model_id, path, settings)
            _check_kind(row.model_id, row.model_type, loaded)
            _check_same_features(row, loaded)
            with anyio.CancelScope(shield=True):  # as in import: never orphan a committed file
                updated = await active_models.update_file(
                    conn,
                    row.id,
                    file_path=str(path),
                    file_sha256=loaded.sha256,
                    file_state="ok" if problem is None else "redownloaded",
                    notify_action=notify_action,
                )
        except BaseException as exc:
            if path != old_path:
                _unlink_quietly(path)
            if isinstance(exc, ModelImportError):
                with anyio.CancelScope(shield=True):
                    await active_models.set_file_state(conn, row.id, "error", exc.message)
            raise
        if updated is None:  # deleted meanwhile by something that does not take our lock
            if path != old_path:
                _unlink_quietly(path)
            raise _not_found(active_model_id)
        if path != old_path:
            # The altered file is replaced by the download; nothing refers to it any more.
            _unlink_quietly(old_path)
    log.info(
        "model file reloaded",
        active_model_id=row.id,
        redownloaded=problem is not None,
        path=str(path),
    )
    return ReloadResult(
        model=updated, redownloaded=problem is not None, reason=problem, repairs=loaded.repairs
    )


# --------------------------------------------------------------------------- metrics, delete


async def update_metrics(
    pool: asyncpg.Pool, client: TrainingServiceClient, active_model_id: int
) -> ActiveModelRow:
    """Copy the training metrics again from the Training Service."""
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_model_id)
    if row is None:
        raise _not_found(active_model_id)
    info = await fetch_model_info(client, row.model_id)
    async with pool.acquire() as conn:
        updated = await active_models.update_training_metrics(
            conn, active_model_id, training_metrics_of(info)
        )
    if updated is None:
        raise _not_found(active_model_id)
    return updated


async def delete_imported_model(pool: asyncpg.Pool, active_model_id: int) -> ActiveModelRow:
    """Delete a model, its predictions, scan state and file (under the model's file lock)."""
    async with pool.acquire() as conn:
        row = await active_models.get_model(conn, active_model_id)
    if row is None:
        raise _not_found(active_model_id)
    async with model_lock(pool, row.model_id) as conn:
        deleted = await active_models.delete_model(conn, active_model_id)
    if deleted is None:
        raise _not_found(active_model_id)
    return deleted


# --------------------------------------------------------------------------- backtest


@dataclass(frozen=True, slots=True)
class CheckedModel:
    """A model loaded for a backtest: checked as an import checks it, never activated.

    `row` is the `active_models` row when the model is imported (its settings
    apply: threshold, phases, coin filter), else None.
    """

    model_id: int
    loaded: LoadedModel
    features: tuple[str, ...]
    info: ModelInfo | None
    row: dict[str, Any] | None


async def load_checked_model(
    pool: asyncpg.Pool, settings: Settings, client: TrainingServiceClient, model_id: int
) -> CheckedModel:
    """Training Service model `model_id` through the import's checks, without a row.

    An imported model whose file still hashes to the sha256 recorded at import
    is loaded from that file. Otherwise the file is downloaded, loaded and
    probed exactly as `import_model` does (metadata, kind, features), then
    removed again: a backtest leaves no file and no row behind.
    """
    async with model_lock(pool, model_id) as conn:
        existing = await active_models.get_model_by_model_id(conn, model_id)
        row = None if existing is None else await active_models.full_row(conn, existing.id)
        if existing is not None and row is not None:
            path = Path(existing.file_path)
            problem = await anyio.to_thread.run_sync(_local_problem, path, existing.file_sha256)
            if problem is None:
                loaded = await _load(model_id, path, settings)
                _check_same_features(existing, loaded)
                return CheckedModel(model_id, loaded, existing.features, None, row)
            log.info("backtest downloads the model again", model_id=model_id, problem=problem)
        info = await fetch_model_info(client, model_id)
        errors = _metadata_errors(info)
        if errors:
            raise errors[0]
        path, sha256 = await _download(client, settings, model_id)
        try:
            loaded = await _load(model_id, path, settings)
            if loaded.sha256 != sha256:
                raise _file_refused(model_id, ModelFileError(f"{path}: changed while being loaded"))
            _check_kind(model_id, info.model_type, loaded)
            features = _reconcile_features(model_id, info.features, loaded)
            _engine_check(model_id, features, info.params)
        finally:
            _unlink_quietly(path)
        return CheckedModel(model_id, loaded, features, info, row)
