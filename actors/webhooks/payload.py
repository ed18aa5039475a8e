"""What a webhook says and to whom: tags, send modes, the n8n payload, outbox jobs.

Pure functions, no I/O. Predictors turn their stored predictions into
`webhook_items`; the batcher merges every model's items of a batch with
`tick_jobs` (one job per URL and coin tick) and queues them in the transaction
that moves the intake cursor. Manual predictions queue `webhook_jobs` with
their predictions.
The payload shape is fixed by CONTRACTS.md section 4 (n8n workflows read it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from storage.outbox.jobs import ModelSnapshot, OutboxJob
from storage.version import VERSION

SERVICE_NAME = "pump-predictor"

TAG_NEGATIVE = "negative"
TAG_POSITIVE = "positive"
TAG_ALERT = "alert"
TAGS = (TAG_NEGATIVE, TAG_POSITIVE, TAG_ALERT)

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
            # A shadow model is never sent (storage.models.model_mode), whatever its switch says.
            n8n_enabled=bool(row["n8n_enabled"]) and row.get("mode", "live") != "shadow",
            n8n_send_modes=tuple(row["n8n_send_modes"]),
        )


class ReportedPrediction(NamedTuple):
    """One stored prediction, as the webhook reports it (a `Reported`)."""

    coin_id: str
    data_timestamp: datetime  # coin_metrics.timestamp of the tick (aware)
    prediction: int  # 0 | 1
    probability: float
    tag: str
    alert_threshold: float


class Reported(Protocol):
    """What a webhook item needs of a prediction (storage.predictions.writes.NewPrediction
    has it too, so a fresh row is reported without a copy)."""

    @property
    def coin_id(self) -> str: ...
    @property
    def data_timestamp(self) -> datetime: ...
    @property
    def prediction(self) -> int: ...
    @property
    def probability(self) -> float: ...
    @property
    def tag(self) -> str: ...
    @property
    def alert_threshold(self) -> float: ...


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


@functools.lru_cache(maxsize=16384)
def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC; a naive datetime is taken as UTC (the database stores UTC).

    Cached: every model of a batch reports the same ticks."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


_SNAPSHOTS: dict[WebhookModel, ModelSnapshot] = {}
_SNAPSHOTS_SIZE = 1024  # far more than the active models of one service


# One encoder for every call: json.dumps with options builds a new encoder each time,
# which cost more than the encoding of the small per-tick values.
_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def model_snapshot(model: WebhookModel) -> ModelSnapshot:
    """The `model` object of a prediction item as JSON text, and its key (SHA-256), as
    jobs refer to it: serialised and hashed once per model.

    Every tick of a model repeats the same object (with its full feature list);
    building and encoding it per tick was most of the webhook path's CPU. Keyed on
    the frozen model itself, so a changed setting is a new key.
    """
    snapshot = _SNAPSHOTS.get(model)
    if snapshot is None:
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
        if len(_SNAPSHOTS) >= _SNAPSHOTS_SIZE:
            _SNAPSHOTS.clear()
        snapshot = ModelSnapshot(hashlib.sha256(text.encode()).hexdigest(), text)
        _SNAPSHOTS[model] = snapshot
    return snapshot


# What a compact model object keeps: who the model is and what it predicts.
_COMPACT_KEYS = (
    "id",
    "active_model_id",
    "name",
    "model_type",
    "target_variable",
    "target_operator",
    "target_value",
    "future_minutes",
    "price_change_percent",
    "target_direction",
)


def compact_model_json(model_json: str) -> str:
    """A model object (as stored in a snapshot) without its feature list and phases:
    N8N_PAYLOAD=compact. Same key names, so workflows reading `model.name` still work."""
    return _json(_compact_model(json.loads(model_json)))


def _compact_model(model: Mapping[str, Any]) -> dict[str, Any]:
    return {key: model.get(key) for key in _COMPACT_KEYS}


def snapshot_reference(key: str) -> str:
    """What a job stored before item tails holds in place of a model object."""
    return f'{{"snapshot":"{key}"}}'


# A stored item is `{"prediction":..,"probability":..,"tail":key}`: everything after the
# probability (is_alert, alert_threshold, tag and the whole model object) is the same for
# every item of a model, tag and threshold, so it is stored once as a snapshot whose text
# is that part as a JSON object (`item_tail`). An item was ~210 bytes, 64 of them a model
# snapshot reference; ten of them made a payload past PostgreSQL's compression threshold.
# Tail keys are 32 hex digits (128 bits of SHA-256), model snapshot keys 64.
TAIL_KEY_LENGTH = 32

# Both references, in our text and in PostgreSQL's jsonb text output (spaces after ':'
# and ','): a model object `{"snapshot":"<64 hex>"}` (jobs stored before item tails) and
# an item's member `"tail":"<32 hex>"` (written last; replaced by the tail's members
# wherever it is, so a reordered object expands as well).
_REFERENCE = re.compile(
    r'\{\s*"snapshot"\s*:\s*"([0-9a-f]{64})"\s*\}'
    rf'|"tail"\s*:\s*"([0-9a-f]{{{TAIL_KEY_LENGTH}}})"'
)


def is_tail_key(key: str) -> bool:
    return len(key) == TAIL_KEY_LENGTH


def snapshot_keys(items_json: str) -> set[str]:
    """The snapshot keys (models and item tails) a stored job's items refer to."""
    return {model or tail for model, tail in _REFERENCE.findall(items_json)}


def expand_snapshots(items_json: str, models: Mapping[str, str]) -> str:
    """Items text with every reference replaced by its snapshot's text: a model object
    by the model, an item's tail by the tail object's members (the item as sent).

    Raises KeyError naming a key that `models` lacks: sending a reference instead
    of the model would break the receiver's contract.
    """
    if '"snapshot"' not in items_json and '"tail"' not in items_json:
        return items_json
    return _REFERENCE.sub(lambda m: _expansion(m, models), items_json)


def _expansion(match: re.Match[str], models: Mapping[str, str]) -> str:
    model, tail = match.groups()
    if model is not None:
        return models[model]
    return models[tail][1:-1]  # the tail object's members


def item_tail(model_json: str, tag: str, alert_threshold: float) -> ModelSnapshot:
    """The part every item of a model, tag and threshold shares, as a snapshot: a JSON
    object of the item's members after its probability, in the order they are sent."""
    text = (
        f'{{"is_alert":{"true" if tag == TAG_ALERT else "false"}'
        f',"alert_threshold":{_float_json(alert_threshold)}'
        f',"tag":{_TAG_JSON.get(tag) or _json(tag)}'
        f',"model":{model_json}}}'
    )
    return ModelSnapshot(hashlib.sha256(text.encode()).hexdigest()[:TAIL_KEY_LENGTH], text)


def tail_reference(key: str) -> str:
    """What a stored item holds after its probability (see `expand_snapshots`)."""
    return f',"tail":"{key}"}}'


def snapshot_model(key: str, text: str) -> Any:
    """The model object (decoded) a snapshot holds: the snapshot itself or a tail's."""
    decoded = json.loads(text)
    return decoded.get("model") if is_tail_key(key) and isinstance(decoded, dict) else decoded


def compact_snapshot_json(key: str, text: str) -> str:
    """A snapshot's text with its model in the compact form (N8N_PAYLOAD=compact)."""
    if not is_tail_key(key):
        return compact_model_json(text)
    tail = json.loads(text)
    tail["model"] = _compact_model(tail["model"])
    return _json(tail)


def _float_json(value: float) -> str:
    """A float exactly as json.dumps writes it (repr); NaN and infinities are refused."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"out of range float values are not JSON compliant: {number!r}")
    return repr(number)


_TAG_JSON = {tag: _json(tag) for tag in TAGS}
_SERVICE_JSON = _json(SERVICE_NAME)


def prediction_item_json(model: WebhookModel, prediction: Reported) -> str:
    """One entry of `predictions` in the payload, as JSON text."""
    return _item_json(model_snapshot(model).json, prediction)


def _item_json(model_text: str, prediction: Reported) -> str:
    """An item as sent: what a stored item and its tail expand to."""
    tail = item_tail(model_text, prediction.tag, prediction.alert_threshold)
    return _item_text(prediction, f",{tail.json[1:]}")


def _item_text(prediction: Reported, rest: str) -> str:
    """An item's prediction and probability, then `rest`: the tail's members (the item
    as sent) or its reference (as stored). `column_items` writes the same per item."""
    return (
        f'{{"prediction":{int(prediction.prediction)}'
        f',"probability":{_float_json(prediction.probability)}{rest}'
    )


@functools.lru_cache(maxsize=16)
def _version_json(version: str) -> str:
    """The version as JSON (one or two versions per process: encoded once)."""
    return _json(version)


def payload_json(
    coin_id: str,
    timestamp: str,
    items_json: str,
    *,
    total_predictions: int,
    alerts_count: int,
    version: str,
    sent_at: str | None = None,
) -> str:
    """The CONTRACTS.md section 4 envelope around ready item texts.

    `items_json` is the comma-separated item objects without brackets, so the
    dispatcher can merge the items of several jobs by concatenation. `sent_at`
    (ISO UTC) is added by the dispatcher to each POST, never stored in the outbox.
    """
    sent = "" if sent_at is None else f',"sent_at":{_json(sent_at)}'
    return (
        f'{{"coin_id":{_json(coin_id)},"timestamp":{_json(timestamp)}'
        f',"predictions":[{items_json}]'
        f',"metadata":{{"total_predictions":{int(total_predictions)}'
        f',"alerts_count":{int(alerts_count)},"service":{_SERVICE_JSON}'
        f',"version":{_version_json(version)}{sent}}}}}'
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


def _key(url: str, coin_id: str, timestamp: str, active_model_id: int) -> str:
    """Idempotency key of one model's job outside a batch (manual predictions): stable
    per (URL, coin, tick, model), so re-processing yields the same key."""
    return hashlib.sha256(f"{url}|{coin_id}|{timestamp}|{active_model_id}".encode()).hexdigest()


class WebhookItem(NamedTuple):
    """One model's prediction of one coin tick, ready to be sent to one URL.

    Items of every model of a batch are merged per URL and coin tick into one
    job (`tick_jobs`), so each coin tick is one outbox row and one POST.
    """

    target_url: str
    coin_id: str
    data_timestamp: datetime
    timestamp: str  # iso_timestamp(data_timestamp)
    active_model_id: int
    model_id: int
    item_json: str  # the entry of payload.predictions, its tail as a snapshot reference
    is_alert: bool
    snapshot: ModelSnapshot  # the item's tail (`item_tail`)


def webhook_items(
    model: WebhookModel, predictions: Sequence[Reported], *, default_url: str | None
) -> list[WebhookItem]:
    """The items a model sends for these predictions: none when its webhooks are off,
    no URL is configured, or its send modes exclude the tag."""
    url = target_url(model, default_url)
    if not model.n8n_enabled or url is None:
        return []
    snapshot = model_snapshot(model)
    sent = {tag for tag in TAGS if matches_send_modes(model.n8n_send_modes, tag)}
    items = []
    for p in predictions:
        if p.tag not in sent:
            continue
        # A stored prediction keeps the threshold it was made with.
        tail, tail_snapshot = _tail_text(snapshot, p.tag, float(p.alert_threshold))
        items.append(
            WebhookItem(
                url,
                p.coin_id,
                p.data_timestamp,
                iso_timestamp(p.data_timestamp),
                model.active_model_id,
                model.model_id,
                _item_text(p, tail),
                p.tag == TAG_ALERT,
                tail_snapshot,
            )
        )
    return items


# id(model) -> (model, its item tails), for `column_items`.
_MODEL_TEXTS: dict[int, tuple[WebhookModel, dict[str, tuple[str, ModelSnapshot]]]] = {}


def _model_tails(model: WebhookModel) -> dict[str, tuple[str, ModelSnapshot]]:
    """`_item_tails` of this model object, found by its identity: the snapshot cache's
    key is the frozen model, whose hash (every field, the whole feature list) cost more
    per batch than the lookup it served. The entry holds the model, so its id is not
    reused while it is kept; a changed model is a new object."""
    entry = _MODEL_TEXTS.get(id(model))
    if entry is not None and entry[0] is model:
        return entry[1]
    tails = _item_tails(model)
    if len(_MODEL_TEXTS) >= _SNAPSHOTS_SIZE:
        _MODEL_TEXTS.clear()
    _MODEL_TEXTS[id(model)] = (model, tails)
    return tails


def _item_tails(model: WebhookModel) -> dict[str, tuple[str, ModelSnapshot]]:
    """Per tag the model sends at its own threshold: an item's stored text after its
    probability and the tail snapshot it refers to."""
    snapshot = model_snapshot(model)
    return {
        tag: _tail_text(snapshot, tag, model.alert_threshold)
        for tag in TAGS
        if matches_send_modes(model.n8n_send_modes, tag)
    }


@functools.lru_cache(maxsize=4096)
def _tail_text(model: ModelSnapshot, tag: str, alert_threshold: float) -> tuple[str, ModelSnapshot]:
    tail = item_tail(model.json, tag, alert_threshold)
    return tail_reference(tail.key), tail


def column_items(
    model: WebhookModel,
    ticks: Sequence[tuple[str, datetime, str]],
    predictions: Sequence[int],
    probabilities: Sequence[float],
    tags: Sequence[str],
    *,
    default_url: str | None,
) -> list[WebhookItem]:
    """`webhook_items` of a batch's predictions given as columns (each tick as coin,
    data_timestamp, `iso_timestamp`; the model's own threshold): the same items, with
    the text every item of a tag shares written once per model, not per item."""
    url = target_url(model, default_url)
    if not model.n8n_enabled or url is None:
        return []
    if not all(map(math.isfinite, probabilities)):
        _float_json(next(p for p in probabilities if not math.isfinite(p)))  # raises
    tails = _model_tails(model)
    active, model_id = model.active_model_id, model.model_id
    return [
        WebhookItem(
            url,
            coin,
            at,
            text,
            active,
            model_id,
            f'{{"prediction":{int(prediction)},"probability":{float(p)!r}{tails[tag][0]}',
            tag == TAG_ALERT,
            tails[tag][1],
        )
        for (coin, at, text), prediction, p, tag in zip(
            ticks, predictions, probabilities, tags, strict=True
        )
        if tag in tails
    ]


def tick_key(url: str, coin_id: str, timestamp: str) -> str:
    """Idempotency key of a coin tick's POST to one URL, whichever models it carries.

    Stable when a tick is processed again (after a crash, or the poller's overlap
    after a restart): the job exists already and nothing is sent twice.
    """
    return hashlib.sha256(f"{url}|{coin_id}|{timestamp}".encode()).hexdigest()


def tick_jobs(items: Iterable[WebhookItem], *, version: str = VERSION) -> list[OutboxJob]:
    """One job per URL and coin tick with every model's item (ordered by model)."""
    return _jobs(
        items, lambda first: tick_key(first.target_url, first.coin_id, first.timestamp), version
    )


def webhook_jobs(
    model: WebhookModel,
    predictions: Sequence[Reported],
    *,
    default_url: str | None,
    version: str = VERSION,
) -> list[OutboxJob]:
    """Jobs of one model's predictions outside a batch (manual predictions): one per
    URL and coin tick, keyed per model so other models' jobs of the tick stay apart."""
    return _jobs(
        webhook_items(model, predictions, default_url=default_url),
        lambda first: _key(first.target_url, first.coin_id, first.timestamp, first.active_model_id),
        version,
    )


_BY_MODEL = operator.attrgetter("active_model_id")


def _jobs(
    items: Iterable[WebhookItem], key: Callable[[WebhookItem], str], version: str
) -> list[OutboxJob]:
    groups: defaultdict[tuple[str, str, datetime], list[WebhookItem]] = defaultdict(list)
    for item in items:
        groups[(item.target_url, item.coin_id, item.data_timestamp)].append(item)
    jobs = []
    for group in groups.values():
        group.sort(key=_BY_MODEL)
        first = group[0]
        items_json = ",".join([i.item_json for i in group])
        alerts = sum([i.is_alert for i in group])
        jobs.append(
            OutboxJob(
                idempotency_key=key(first),
                target_url=first.target_url,
                coin_id=first.coin_id,
                data_timestamp=first.data_timestamp,
                # Sorted by the group's order, each once.
                active_model_ids=tuple(dict.fromkeys(map(_BY_MODEL, group))),
                model_ids=tuple(sorted({i.model_id for i in group})),
                snapshots=tuple({i.snapshot.key: i.snapshot for i in group}.values()),
                payload=payload_json(
                    first.coin_id,
                    first.timestamp,
                    items_json,
                    total_predictions=len(group),
                    alerts_count=alerts,
                    version=version,
                ),
                timestamp=first.timestamp,
                items_json=items_json,
                item_count=len(group),
                alerts_count=alerts,
                version=version,
            )
        )
    return jobs
