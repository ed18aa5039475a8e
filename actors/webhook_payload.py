"""What a webhook says and to whom: tags, send modes, the n8n payload, outbox jobs.

Pure functions, no I/O. The predictors call `webhook_jobs` inside the
transaction that inserts their predictions and hand the result to
`storage.outbox.enqueue`, so a job exists exactly when its predictions do.
The payload shape is fixed by CONTRACTS.md section 4 (n8n workflows read it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.outbox import OutboxJob
from web.context import VERSION

SERVICE_NAME = "pump-predictor"

TAG_NEGATIVE = "negative"
TAG_POSITIVE = "positive"
TAG_ALERT = "alert"
TAGS = (TAG_NEGATIVE, TAG_POSITIVE, TAG_ALERT)

SEND_MODES = ("all", "alerts_only", "positive_only", "negative_only")
# Each mode selects tags literally as CONTRACTS.md section 3 defines them:
# `positive_only` means tag "positive" (0.5 <= p < threshold) and NOT alerts.
# Users who want every p >= 0.5 combine ["positive_only", "alerts_only"].
_MODE_TAGS: dict[str, frozenset[str]] = {
    "all": frozenset(TAGS),
    "alerts_only": frozenset({TAG_ALERT}),
    "positive_only": frozenset({TAG_POSITIVE}),
    "negative_only": frozenset({TAG_NEGATIVE}),
}


@dataclass(frozen=True, slots=True)
class WebhookModel:
    """The parts of an active model that a webhook reports or is steered by."""

    active_model_id: int
    model_id: int  # ml_models.id
    name: str  # custom name when set
    model_type: str
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    features: tuple[str, ...]
    phases: tuple[int, ...] | None
    alert_threshold: float
    n8n_webhook_url: str | None
    n8n_enabled: bool
    n8n_send_modes: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WebhookModel:
        """From an `active_models` row (asyncpg Record or dict, jsonb already decoded)."""
        phases = row["phases"]
        return cls(
            active_model_id=int(row["id"]),
            model_id=int(row["model_id"]),
            name=row["custom_name"] or row["name"],
            model_type=row["model_type"],
            target_variable=row["target_variable"],
            target_operator=row["target_operator"],
            target_value=row["target_value"],
            future_minutes=row["future_minutes"],
            price_change_percent=row["price_change_percent"],
            target_direction=row["target_direction"],
            features=tuple(row["features"]),
            phases=None if phases is None else tuple(int(p) for p in phases),
            alert_threshold=float(row["alert_threshold"]),
            n8n_webhook_url=row["n8n_webhook_url"],
            n8n_enabled=bool(row["n8n_enabled"]),
            n8n_send_modes=tuple(row["n8n_send_modes"]),
        )


@dataclass(frozen=True, slots=True)
class ReportedPrediction:
    """One stored prediction, as the webhook reports it."""

    coin_id: str
    data_timestamp: datetime  # coin_metrics.timestamp of the tick (aware)
    prediction: int  # 0 | 1
    probability: float
    tag: str
    alert_threshold: float


def tag_for(probability: float, alert_threshold: float) -> str:
    """negative p < 0.5, positive 0.5 <= p < threshold, alert p >= threshold.

    The one implementation of CONTRACTS.md section 3; alert is checked first so
    that a threshold of exactly 0.5 makes every p >= 0.5 an alert.
    """
    if probability >= alert_threshold:
        return TAG_ALERT
    if probability >= 0.5:
        return TAG_POSITIVE
    return TAG_NEGATIVE


def matches_send_modes(modes: Iterable[str], tag: str) -> bool:
    """True when any of the modes (combined with OR) selects the tag.

    Unknown modes select nothing (the API refuses them; the database may still
    hold one written by an older version, and sending more than asked is worse).
    """
    return any(tag in _MODE_TAGS.get(mode, frozenset()) for mode in modes)


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC; a naive datetime is taken as UTC (the database stores UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


_MODEL_JSON_CACHE: dict[WebhookModel, str] = {}
_MODEL_JSON_CACHE_SIZE = 1024  # far more than the active models of one service


# One encoder for every call: json.dumps with options builds a new encoder each time,
# which cost more than the encoding of the small per-tick values.
_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def model_json(model: WebhookModel) -> str:
    """The `model` object of a prediction item as JSON text, serialised once per model.

    Every tick of a model repeats the same object (with its full feature list);
    building and encoding it per tick was most of the webhook path's CPU. Keyed on
    the frozen model itself, so a changed setting is a new key.
    """
    text = _MODEL_JSON_CACHE.get(model)
    if text is None:
        text = _json(
            {
                "id": model.model_id,
                "active_model_id": model.active_model_id,
                "name": model.name,
                "model_type": model.model_type,
                "target_variable": model.target_variable,
                "target_operator": model.target_operator,
                "target_value": model.target_value,
                "future_minutes": model.future_minutes,
                "price_change_percent": model.price_change_percent,
                "target_direction": model.target_direction,
                "features": list(model.features),
                "phases": None if model.phases is None else list(model.phases),
            }
        )
        if len(_MODEL_JSON_CACHE) >= _MODEL_JSON_CACHE_SIZE:
            _MODEL_JSON_CACHE.clear()
        _MODEL_JSON_CACHE[model] = text
    return text


def _float_json(value: float) -> str:
    """A float exactly as json.dumps writes it (repr); NaN and infinities are refused."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"out of range float values are not JSON compliant: {number!r}")
    return repr(number)


_TAG_JSON = {tag: _json(tag) for tag in TAGS}
_SERVICE_JSON = _json(SERVICE_NAME)


def prediction_item_json(model: WebhookModel, prediction: ReportedPrediction) -> str:
    """One entry of `predictions` in the payload, as JSON text."""
    return _item_json(model_json(model), prediction)


def _item_json(model_text: str, prediction: ReportedPrediction) -> str:
    tag = prediction.tag
    return (
        f'{{"prediction":{int(prediction.prediction)}'
        f',"probability":{_float_json(prediction.probability)}'
        f',"is_alert":{"true" if tag == TAG_ALERT else "false"}'
        f',"alert_threshold":{_float_json(prediction.alert_threshold)}'
        f',"tag":{_TAG_JSON.get(tag) or _json(tag)}'
        f',"model":{model_text}}}'
    )


def payload_json(
    coin_id: str,
    timestamp: str,
    items_json: str,
    *,
    total_predictions: int,
    alerts_count: int,
    version: str,
) -> str:
    """The CONTRACTS.md section 4 envelope around ready item texts.

    `items_json` is the comma-separated item objects without brackets, so the
    dispatcher can merge the items of several jobs by concatenation.
    """
    return (
        f'{{"coin_id":{_json(coin_id)},"timestamp":{_json(timestamp)}'
        f',"predictions":[{items_json}]'
        f',"metadata":{{"total_predictions":{int(total_predictions)}'
        f',"alerts_count":{int(alerts_count)},"service":{_SERVICE_JSON}'
        f',"version":{_json(version)}}}}}'
    )


def _payload_text(
    coin_id: str,
    data_timestamp: datetime,
    items: Sequence[tuple[WebhookModel, ReportedPrediction]],
    version: str,
) -> str:
    return payload_json(
        coin_id,
        iso_timestamp(data_timestamp),
        ",".join(prediction_item_json(m, p) for m, p in items),
        total_predictions=len(items),
        alerts_count=sum(1 for _, p in items if p.tag == TAG_ALERT),
        version=version,
    )


def build_payload(
    coin_id: str,
    data_timestamp: datetime,
    items: Sequence[tuple[WebhookModel, ReportedPrediction]],
    version: str = VERSION,
) -> dict[str, Any]:
    """The JSON body of one POST (CONTRACTS.md section 4), decoded (for tests and tools)."""
    decoded: dict[str, Any] = json.loads(_payload_text(coin_id, data_timestamp, items, version))
    return decoded


def target_url(model: WebhookModel, default_url: str | None) -> str | None:
    """The model's own URL, else the global N8N_WEBHOOK_URL; None when neither is set."""
    return model.n8n_webhook_url or default_url or None


def idempotency_key(url: str, coin_id: str, data_timestamp: datetime, active_model_id: int) -> str:
    """Stable per (URL, coin, tick, model): re-processing a tick yields the same key."""
    return _key(url, coin_id, iso_timestamp(data_timestamp), active_model_id)


def _key(url: str, coin_id: str, timestamp: str, active_model_id: int) -> str:
    return hashlib.sha256(f"{url}|{coin_id}|{timestamp}|{active_model_id}".encode()).hexdigest()


def webhook_jobs(
    model: WebhookModel,
    predictions: Sequence[ReportedPrediction],
    *,
    default_url: str | None,
    version: str = VERSION,
) -> list[OutboxJob]:
    """Outbox jobs for one model's batch: one per target URL and coin tick.

    None when webhooks are disabled for the model, no URL is configured, or the
    send modes exclude every tag of a coin.
    """
    url = target_url(model, default_url)
    if not model.n8n_enabled or url is None:
        return []
    by_tick: dict[tuple[str, datetime], list[ReportedPrediction]] = {}
    for prediction in predictions:
        if matches_send_modes(model.n8n_send_modes, prediction.tag):
            by_tick.setdefault((prediction.coin_id, prediction.data_timestamp), []).append(
                prediction
            )
    model_text = model_json(model)
    jobs = []
    for (coin_id, data_timestamp), group in by_tick.items():
        timestamp = iso_timestamp(data_timestamp)
        payload = payload_json(
            coin_id,
            timestamp,
            ",".join(_item_json(model_text, p) for p in group),
            total_predictions=len(group),
            alerts_count=sum(1 for p in group if p.tag == TAG_ALERT),
            version=version,
        )
        jobs.append(
            OutboxJob(
                idempotency_key=_key(url, coin_id, timestamp, model.active_model_id),
                target_url=url,
                coin_id=coin_id,
                data_timestamp=data_timestamp,
                active_model_ids=(model.active_model_id,),
                model_ids=(model.model_id,),
                payload=payload,
            )
        )
    return jobs
