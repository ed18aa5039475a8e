"""Client of the Training Service HTTP API: list models, read one, download its file.

Every failure is a `TrainingServiceError` that names the URL and the reason
(timeout, connection refused, 404, 5xx, invalid JSON), because "import
failed" alone sends an operator to the wrong machine. A failed download
leaves no file behind and is never replaced by a placeholder model.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import urlencode

import aiohttp
import structlog

from storage.errors import StorageError
from storage.masking import mask_text, mask_url
from storage.model_files.store import (
    DEFAULT_MAX_BYTES,
    KNOWN_SUFFIXES,
    ModelFileError,
    store_model_file,
    too_large,
)

__all__ = [
    "ModelInfo",
    "TargetKind",
    "TrainingMetrics",
    "TrainingServiceClient",
    "TrainingServiceError",
]

log = structlog.get_logger(__name__)

TargetKind = Literal["time_based", "classic"]
TARGET_OPERATORS: Final[frozenset[str]] = frozenset({">", "<", ">=", "<=", "="})
TARGET_DIRECTIONS: Final[frozenset[str]] = frozenset({"up", "down"})
_DOWNLOAD_CHUNK: Final = 64 * 1024
_BODY_EXCERPT: Final = 200


class TrainingServiceError(StorageError):
    """A Training Service request failed; `status` is the status the Training Service
    answered, when it answered (what this service answers is the web edge's choice)."""

    code = "training_service_error"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


# --------------------------------------------------------------------------- parsing

# Conversions are strict about types but never treat 0 as missing: a model
# trained on a 0 % threshold must keep its 0, not become NULL.


def _opt_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, got a boolean")
    try:
        return float(value)  # numbers, and NUMERIC columns serialized as strings
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {value!r}") from None


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    number = _opt_float(obj, key)
    if number is None:
        return None
    if not number.is_integer():
        raise ValueError(f"{key}: expected an integer, got {obj.get(key)!r}")
    return int(number)


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    return value


def _opt_datetime(obj: Mapping[str, Any], key: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{key}: not an ISO timestamp: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{key}: expected a timestamp, got {value!r}")
    # The Training Service writes UTC; a naive value is UTC without the marker.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _json_object(obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if isinstance(value, str):  # some API versions send jsonb columns as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{key}: not valid JSON: {value[:80]!r}") from None
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected an object, got {value!r}")
    return dict(value)


def _json_list(obj: Mapping[str, Any], key: str) -> list[Any] | None:
    value = obj.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{key}: not valid JSON: {value[:80]!r}") from None
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TrainingMetrics:
    """What the Training Service measured when it trained the model (any may be missing)."""

    accuracy: float | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    roc_auc: float | None = None
    mcc: float | None = None
    fpr: float | None = None
    fnr: float | None = None
    simulated_profit_pct: float | None = None
    cv_overfitting_gap: float | None = None
    # Kept as the JSON the service sent: lists or objects, depending on its version.
    confusion_matrix: dict[str, Any] | None = field(default=None, hash=False)
    cv_scores: Any = field(default=None, hash=False)

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> TrainingMetrics:
        cv_scores = obj.get("cv_scores")
        if isinstance(cv_scores, str):  # jsonb sent as JSON text
            try:
                cv_scores = json.loads(cv_scores)
            except ValueError:
                raise ValueError(f"cv_scores: not valid JSON: {cv_scores[:80]!r}") from None
        return cls(
            accuracy=_opt_float(obj, "training_accuracy"),
            f1=_opt_float(obj, "training_f1"),
            precision=_opt_float(obj, "training_precision"),
            recall=_opt_float(obj, "training_recall"),
            roc_auc=_opt_float(obj, "roc_auc"),
            mcc=_opt_float(obj, "mcc"),
            fpr=_opt_float(obj, "fpr"),
            fnr=_opt_float(obj, "fnr"),
            simulated_profit_pct=_opt_float(obj, "simulated_profit_pct"),
            cv_overfitting_gap=_opt_float(obj, "cv_overfitting_gap"),
            confusion_matrix=_json_object(obj, "confusion_matrix"),
            cv_scores=cv_scores,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A Training Service model, as this service needs it.

    The target fields are the effective ones: when `params._time_based` is
    enabled its `future_minutes`, `min_percent_change` and `direction` win
    over the flat columns, as in the Training Service. A model without a
    `target_operator` has a time-based target, otherwise a classic one.
    """

    id: int
    name: str
    model_type: str
    status: str
    is_deleted: bool
    features: tuple[str, ...]
    phases: tuple[int, ...] | None
    params: dict[str, Any] = field(hash=False)
    target_kind: TargetKind
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    use_engineered_features: bool
    feature_engineering_windows: tuple[int, ...]
    metrics: TrainingMetrics
    feature_importance: dict[str, Any] | None = field(hash=False)
    description: str | None
    model_file_path: str | None
    created_at: datetime | None
    updated_at: datetime | None
    train_start: datetime | None
    train_end: datetime | None
    # The object exactly as received, for storing alongside our copy.
    raw: dict[str, Any] = field(hash=False, compare=False, repr=False)

    @property
    def is_time_based(self) -> bool:
        return self.target_kind == "time_based"

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> ModelInfo:
        """Parse an API model object (or an `ml_models` row); ValueError names the bad field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"expected a model object, got {type(obj).__name__}")
        model_id = _opt_int(obj, "id")
        if model_id is None:
            raise ValueError("id: missing")
        name = _opt_str(obj, "name")
        model_type = _opt_str(obj, "model_type")
        if name is None or model_type is None:
            raise ValueError("name and model_type are required")

        features = _json_list(obj, "features") or []
        if not all(isinstance(f, str) for f in features):
            raise ValueError(f"features: expected a list of names, got {features!r}")
        phases_list = _json_list(obj, "phases")
        if phases_list is not None and not all(
            isinstance(p, int) and not isinstance(p, bool) for p in phases_list
        ):
            raise ValueError(f"phases: expected a list of phase ids, got {phases_list!r}")
        params = _json_object(obj, "params") or {}

        operator = _opt_str(obj, "target_operator")
        if operator is not None and operator not in TARGET_OPERATORS:
            raise ValueError(f"target_operator: unknown operator {operator!r}")
        future_minutes = _opt_int(obj, "future_minutes")
        change = _opt_float(obj, "price_change_percent")
        direction = _opt_str(obj, "target_direction")
        time_based = params.get("_time_based")
        if isinstance(time_based, Mapping) and time_based.get("enabled") is True:
            tb_minutes = _opt_int(time_based, "future_minutes")
            tb_change = _opt_float(time_based, "min_percent_change")
            tb_direction = _opt_str(time_based, "direction")
            future_minutes = tb_minutes if tb_minutes is not None else future_minutes
            change = tb_change if tb_change is not None else change
            direction = tb_direction if tb_direction is not None else direction
        if direction is not None:
            direction = direction.lower()
            if direction not in TARGET_DIRECTIONS:
                raise ValueError(f"target_direction: expected up or down, got {direction!r}")

        windows = params.get("feature_engineering_windows") or []
        if not isinstance(windows, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in windows
        ):
            raise ValueError(
                f"params.feature_engineering_windows: expected positive ints, got {windows!r}"
            )

        return cls(
            id=model_id,
            name=name,
            model_type=model_type,
            status=_opt_str(obj, "status") or "",
            is_deleted=_opt_bool(obj, "is_deleted", False),
            features=tuple(features),
            phases=tuple(phases_list) if phases_list is not None else None,
            params=params,
            target_kind="time_based" if operator is None else "classic",
            target_variable=_opt_str(obj, "target_variable"),
            target_operator=operator,
            target_value=_opt_float(obj, "target_value"),
            future_minutes=future_minutes,
            price_change_percent=change,
            target_direction=direction,
            use_engineered_features=_opt_bool(params, "use_engineered_features", False),
            feature_engineering_windows=tuple(windows),
            metrics=TrainingMetrics.from_mapping(obj),
            feature_importance=_json_object(obj, "feature_importance"),
            description=_opt_str(obj, "description"),
            model_file_path=_opt_str(obj, "model_file_path"),
            created_at=_opt_datetime(obj, "created_at"),
            updated_at=_opt_datetime(obj, "updated_at"),
            train_start=_opt_datetime(obj, "train_start"),
            train_end=_opt_datetime(obj, "train_end"),
            raw=dict(obj),
        )


# --------------------------------------------------------------------------- client


def _redact(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    return mask_url(url)


def _excerpt(body: bytes) -> str:
    # Masked: an error page may echo the request, `token=` values included.
    text = mask_text(body[:_BODY_EXCERPT].decode("utf-8", "replace").strip())
    return text + ("…" if len(body) > _BODY_EXCERPT else "")


class TrainingServiceClient:
    """Async client of the Training Service API.

    Use it as an async context manager, or pass a `session` you own (it is
    then never closed here). `timeout` bounds each API call; a download may
    take longer in total but fails when no byte arrives for `timeout` seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the client can be built outside a running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _failure(self, url: str, exc: BaseException, *, timeout: float) -> TrainingServiceError:
        shown = _redact(url)
        if isinstance(exc, TimeoutError):
            return TrainingServiceError(
                f"Training Service GET {shown} timed out after {timeout:g} s", url=shown
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            errno = exc.os_error.errno
            why = os.strerror(errno) if errno else str(exc.os_error)
            return TrainingServiceError(
                f"Training Service GET {shown}: cannot connect ({why})", url=shown
            )
        if isinstance(exc, aiohttp.ClientPayloadError):
            return TrainingServiceError(
                f"Training Service GET {shown}: the response was cut off ({exc})", url=shown
            )
        return TrainingServiceError(
            f"Training Service GET {shown} failed: {type(exc).__name__}: {exc}", url=shown
        )

    @staticmethod
    def _status_error(
        url: str, status: int, reason: str | None, body: bytes, what: str
    ) -> TrainingServiceError:
        shown = _redact(url)
        if status == 404:
            message = f"Training Service GET {shown}: 404 Not Found ({what})"
        else:
            detail = _excerpt(body)
            message = f"Training Service GET {shown}: HTTP {status} {reason or ''}".rstrip()
            message += f": {detail}" if detail else ""
        return TrainingServiceError(message, url=shown, status=status)

    async def _get_json(
        self, path: str, *, params: Mapping[str, str] | None = None, what: str
    ) -> Any:
        url = self._url(path)
        shown_url = f"{url}?{urlencode(params)}" if params else url
        try:
            async with self._get_session().get(
                url, params=params, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                body = await response.read()
                status, reason = response.status, response.reason
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failure(shown_url, exc, timeout=self.timeout) from exc
        if status != 200:
            raise self._status_error(shown_url, status, reason, body, what)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TrainingServiceError(
                f"Training Service GET {_redact(shown_url)}: invalid JSON ({exc}): "
                f"{_excerpt(body)!r}",
                url=_redact(shown_url),
                status=status,
            ) from exc

    async def list_models(self) -> list[ModelInfo]:
        """READY, not deleted models. An entry that cannot be parsed is logged and skipped,
        so one broken model does not hide all the others from the import list."""
        params = {"status": "READY", "is_deleted": "false"}
        payload = await self._get_json("/models", params=params, what="model list")
        if not isinstance(payload, list):
            url = _redact(self._url("/models"))
            raise TrainingServiceError(
                f"Training Service GET {url}: expected a JSON list of models, "
                f"got {type(payload).__name__}",
                url=url,
                status=200,
            )
        models: list[ModelInfo] = []
        for index, item in enumerate(payload):
            try:
                models.append(ModelInfo.from_mapping(item))
            except ValueError as exc:
                model_id = item.get("id") if isinstance(item, Mapping) else None
                log.warning(
                    "skipping an invalid model object from the Training Service",
                    index=index,
                    model_id=model_id,
                    error=str(exc),
                )
        return models

    async def get_model(self, model_id: int) -> ModelInfo:
        """One model; 404 (missing or deleted) is a TrainingServiceError with status 404."""
        path = f"/models/{int(model_id)}"
        payload = await self._get_json(path, what=f"model {model_id} missing or deleted")
        try:
            return ModelInfo.from_mapping(payload)
        except ValueError as exc:
            url = _redact(self._url(path))
            raise TrainingServiceError(
                f"Training Service GET {url}: invalid model object ({exc})", url=url, status=200
            ) from exc

    async def download_model(
        self, model_id: int, directory: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> tuple[Path, str]:
        """Stream the model file to `directory` (atomic rename); return (path, sha256).

        A body over `max_bytes` is refused: at once when its Content-Length says
        so, else as soon as the bytes written (after any Content-Encoding is
        undone, in bounded chunks) pass the limit. Nothing is kept in memory.
        """
        url = self._url(f"/models/{int(model_id)}/download")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.timeout
        )
        try:
            async with self._get_session().get(url, timeout=timeout) as response:
                if response.status != 200:
                    body = await response.read()
                    raise self._status_error(
                        url,
                        response.status,
                        response.reason,
                        body,
                        f"no model file for model {model_id}",
                    )
                announced = response.content_length
                if announced is not None and announced > max_bytes:
                    raise ModelFileError(too_large(max_bytes))
                suffix = _suffix_of(response)
                path, sha256 = await store_model_file(
                    directory, model_id, _body_chunks(response), suffix=suffix, max_bytes=max_bytes
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failure(url, exc, timeout=self.timeout) from exc
        except ModelFileError as exc:
            shown = _redact(url)
            raise TrainingServiceError(
                f"Training Service GET {shown}: {exc}", url=shown, status=200
            ) from exc
        log.info("model file downloaded", model_id=model_id, url=_redact(url), path=str(path))
        return path, sha256


def _suffix_of(response: aiohttp.ClientResponse) -> str:
    """The extension of the server's file name when it is one we know, else `.pkl`."""
    disposition = response.content_disposition
    filename = disposition.filename if disposition is not None else None
    suffix = PurePosixPath(filename).suffix.lower() if filename else ""
    return suffix if suffix in KNOWN_SUFFIXES else ".pkl"


async def _body_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in response.content.iter_chunked(_DOWNLOAD_CHUNK):
        yield chunk
