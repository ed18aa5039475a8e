"""Tags, send modes, the n8n payload and outbox jobs (CONTRACTS.md sections 3-4)."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.webhooks.dispatcher import (
    DeliveryResult,
    WebhookDispatcher,
    merged_body,
    parse_retry_after,
)
from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    build_payload,
    column_items,
    expand_snapshots,
    iso_timestamp,
    matches_send_modes,
    tag_for,
    tick_jobs,
    webhook_items,
    webhook_jobs,
)
from storage.outbox.jobs import ClaimedJob, OutboxJob

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _model(**changes: object) -> WebhookModel:
    base = WebhookModel(
        active_model_id=7,
        model_id=41,
        name="Pump hunter",
        model_type="xgboost",
        target_variable="price_close",
        target_operator=None,
        target_value=None,
        future_minutes=5,
        price_change_percent=10.0,
        target_direction="up",
        features=("price_close", "volume_sol"),
        phases=(1, 2),
        alert_threshold=0.7,
        n8n_webhook_url=None,
        n8n_enabled=True,
        n8n_send_modes=("all",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _prediction(p: float, coin: str = "CoinA", at: datetime = T0) -> ReportedPrediction:
    return ReportedPrediction(coin, at, int(p >= 0.5), p, tag_for(p, 0.7), 0.7)


@pytest.mark.parametrize(
    ("p", "threshold", "tag"),
    [
        (0.0, 0.7, "negative"),
        (0.4999, 0.7, "negative"),
        (0.5, 0.7, "positive"),
        (0.6999, 0.7, "positive"),
        (0.7, 0.7, "alert"),
        (1.0, 0.7, "alert"),
        (0.5, 0.5, "alert"),
        (0.99, 1.0, "positive"),
        (1.0, 1.0, "alert"),
    ],
)
def test_tag_boundaries_follow_the_contract(p: float, threshold: float, tag: str) -> None:
    assert tag_for(p, threshold) == tag


@given(st.floats(0, 1), st.floats(0.5, 1))
def test_tag_is_alert_exactly_at_or_above_threshold(p: float, threshold: float) -> None:
    tag = tag_for(p, threshold)
    assert (tag == "alert") == (p >= threshold)
    assert (tag == "negative") == (p < 0.5 and p < threshold)


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["all"], {"negative", "positive", "alert"}),
        (["alerts_only"], {"alert"}),
        # Literal reading of the tag: positive_only does not include alerts.
        (["positive_only"], {"positive"}),
        (["negative_only"], {"negative"}),
        (["positive_only", "alerts_only"], {"positive", "alert"}),
        (["negative_only", "alerts_only"], {"negative", "alert"}),
        (["all", "alerts_only"], {"negative", "positive", "alert"}),
        (["bogus"], set()),
        ([], set()),
    ],
)
def test_send_modes_combine_with_or(modes: list[str], expected: set[str]) -> None:
    selected = {tag for tag in ("negative", "positive", "alert") if matches_send_modes(modes, tag)}
    assert selected == expected


def test_payload_matches_the_contract_field_by_field() -> None:
    model = _model()
    alert = ReportedPrediction("CoinA", T0, 1, 0.91, "alert", 0.7)
    other = _model(active_model_id=8, model_id=42, name="Second", phases=None)
    positive = ReportedPrediction("CoinA", T0, 1, 0.55, "positive", 0.6)
    payload = build_payload("CoinA", T0, [(model, alert), (other, positive)], "9.9.9")
    assert payload == {
        "coin_id": "CoinA",
        "timestamp": "2026-01-02T03:04:05.678000+00:00",
        "predictions": [
            {
                "prediction": 1,
                "probability": 0.91,
                "is_alert": True,
                "alert_threshold": 0.7,
                "tag": "alert",
                "model": {
                    "id": 41,
                    "active_model_id": 7,
                    "name": "Pump hunter",
                    "model_type": "xgboost",
                    "target_variable": "price_close",
                    "target_operator": None,
                    "target_value": None,
                    "future_minutes": 5,
                    "price_change_percent": 10.0,
                    "target_direction": "up",
                    "features": ["price_close", "volume_sol"],
                    "phases": [1, 2],
                },
            },
            {
                "prediction": 1,
                "probability": 0.55,
                "is_alert": False,
                "alert_threshold": 0.6,
                "tag": "positive",
                "model": {
                    "id": 42,
                    "active_model_id": 8,
                    "name": "Second",
                    "model_type": "xgboost",
                    "target_variable": "price_close",
                    "target_operator": None,
                    "target_value": None,
                    "future_minutes": 5,
                    "price_change_percent": 10.0,
                    "target_direction": "up",
                    "features": ["price_close", "volume_sol"],
                    "phases": None,
                },
            },
        ],
        "metadata": {
            "total_predictions": 2,
            "alerts_count": 1,
            "service": "pump-predictor",
            "version": "9.9.9",
        },
    }
    json.dumps(payload, allow_nan=False)  # plain JSON, nothing exotic


def _model_dict(model: WebhookModel) -> dict[str, object]:
    """The contract's `model` object, written out field by field (not by the code under test)."""
    return {
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


def _body(job: OutboxJob) -> dict[str, Any]:
    """The job's POST body: its payload with the model snapshots put back."""
    models = {snapshot.key: snapshot.json for snapshot in job.snapshots}
    body: dict[str, Any] = json.loads(expand_snapshots(job.payload, models))
    return body


def _claimed(job: OutboxJob, job_id: int) -> ClaimedJob:
    """What the dispatcher makes of a claimed job: the stored payload in pieces, its
    model snapshot references replaced by the models.

    The database returns jsonb text (its own spacing and key order); this mimics that
    with sorted keys and default separators so neither the expansion nor the merge can
    rely on our formatting.
    """
    payload = json.loads(job.payload)
    stored = json.dumps(payload["predictions"], sort_keys=True)[1:-1]
    models = {snapshot.key: snapshot.json for snapshot in job.snapshots}
    return ClaimedJob(
        id=job_id,
        idempotency_key=job.idempotency_key,
        target_url=job.target_url,
        coin_id=job.coin_id,
        data_timestamp=job.data_timestamp,
        active_model_ids=job.active_model_ids,
        model_ids=job.model_ids,
        timestamp=payload["timestamp"],
        items_json=expand_snapshots(stored, models),
        item_count=len(payload["predictions"]),
        alerts_count=payload["metadata"]["alerts_count"],
        version=payload["metadata"]["version"],
        attempts=0,
        created_at=T0,
        locked_until=T0,
    )


def test_merged_post_body_of_a_coin_tick_equals_the_contract_payload() -> None:
    features = tuple(f"feature_{i}" for i in range(40))
    low = _model(active_model_id=3, model_id=30, name="Low", features=features, phases=None)
    mid = _model(
        active_model_id=5,
        model_id=50,
        name='Mid "quoted" ü',
        model_type="random_forest",
        target_operator=">=",
        target_value=0.0,
        future_minutes=None,
        price_change_percent=None,
        target_direction=None,
    )
    high = _model(active_model_id=9, model_id=90, name="High", alert_threshold=0.6)
    coin = 'Coin"X'
    # Jobs are claimed in id order; the model with the highest id committed first.
    per_model = [
        (high, ReportedPrediction(coin, T0, 1, 0.1 + 0.2 + 0.3, "positive", 0.6 + 0.05)),
        (low, ReportedPrediction(coin, T0, 1, 0.9123456789012345, "alert", 0.7)),
        (mid, ReportedPrediction(coin, T0, 0, 1e-05, "negative", 0.8)),
    ]
    claimed = []
    for job_id, (model, prediction) in enumerate(per_model, start=1):
        [job] = webhook_jobs(model, [prediction], default_url="http://g/h", version="2.0.1")
        claimed.append(_claimed(job, job_id))
    body = merged_body(claimed)

    def item(model: WebhookModel, prediction: ReportedPrediction) -> dict[str, object]:
        return {
            "prediction": prediction.prediction,
            "probability": prediction.probability,
            "is_alert": prediction.tag == "alert",
            "alert_threshold": prediction.alert_threshold,
            "tag": prediction.tag,
            "model": _model_dict(model),
        }

    by_model = {model.active_model_id: item(model, p) for model, p in per_model}
    assert json.loads(body) == {
        "coin_id": coin,
        "timestamp": "2026-01-02T03:04:05.678000+00:00",
        "predictions": [by_model[3], by_model[5], by_model[9]],  # ordered by model
        "metadata": {
            "total_predictions": 3,
            "alerts_count": 1,
            "service": "pump-predictor",
            "version": "2.0.1",
        },
    }
    # Floats come back bit for bit (0.1 + 0.2 + 0.3 is not 0.6).
    assert json.loads(body)["predictions"][2]["probability"] == 0.6000000000000001
    single = merged_body(claimed[1:2])
    assert json.loads(single) == {
        "coin_id": coin,
        "timestamp": "2026-01-02T03:04:05.678000+00:00",
        "predictions": [by_model[3]],
        "metadata": {
            "total_predictions": 1,
            "alerts_count": 1,
            "service": "pump-predictor",
            "version": "2.0.1",
        },
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_not_sent(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        webhook_jobs(_model(), [_prediction(bad)], default_url="http://g/h")
    with pytest.raises(ValueError, match="JSON"):
        webhook_jobs(
            _model(),
            [ReportedPrediction("C", T0, 1, 0.9, "alert", bad)],
            default_url="http://g/h",
        )
    with pytest.raises(ValueError, match="JSON"):
        webhook_jobs(_model(target_value=bad), [_prediction(0.9)], default_url="http://g/h")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_probabilities_are_written_exactly_as_json_dumps_writes_them(p: float) -> None:
    [job] = webhook_jobs(
        _model(), [ReportedPrediction("C", T0, 1, p, "alert", 0.7)], default_url="http://g/h"
    )
    assert f'"probability":{json.dumps(p)},' in job.payload
    assert json.loads(job.payload)["predictions"][0]["probability"] == p


def test_a_changed_model_is_not_served_from_the_cache() -> None:
    preds = [_prediction(0.9)]
    before = _body(webhook_jobs(_model(), preds, default_url="http://g/h")[0])
    renamed = _model(name="Renamed", features=("volume_sol",))
    after = _body(webhook_jobs(renamed, preds, default_url="http://g/h")[0])
    assert before["predictions"][0]["model"] == _model_dict(_model())
    assert after["predictions"][0]["model"] == _model_dict(renamed)


def test_payload_timestamp_is_utc_iso_whatever_the_input_zone() -> None:
    berlin = T0.astimezone(timezone(timedelta(hours=1)))
    payload = build_payload("CoinA", berlin, [(_model(), _prediction(0.2, at=berlin))], "1")
    assert payload["timestamp"] == "2026-01-02T03:04:05.678000+00:00"


def test_classic_model_reports_its_target_definition() -> None:
    model = _model(
        target_variable="market_cap_close",
        target_operator=">=",
        target_value=0.0,
        future_minutes=None,
        price_change_percent=None,
        target_direction=None,
    )
    item = build_payload("C", T0, [(model, _prediction(0.3))], "1")["predictions"][0]
    # A target value of 0 stays 0 (the old service turned it into null).
    assert item["model"]["target_value"] == 0.0
    assert item["model"]["target_operator"] == ">="
    assert item["prediction"] == 0 and item["is_alert"] is False and item["tag"] == "negative"


def test_jobs_use_the_model_url_else_the_global_one() -> None:
    preds = [_prediction(0.9)]
    own = webhook_jobs(_model(n8n_webhook_url="http://own/hook"), preds, default_url="http://g/h")
    fallback = webhook_jobs(_model(), preds, default_url="http://g/h")
    assert [j.target_url for j in own] == ["http://own/hook"]
    assert [j.target_url for j in fallback] == ["http://g/h"]
    assert own[0].idempotency_key != fallback[0].idempotency_key


def test_no_jobs_when_disabled_without_url_or_excluded_by_send_mode() -> None:
    preds = [_prediction(0.9), _prediction(0.2, coin="CoinB")]
    assert webhook_jobs(_model(n8n_enabled=False), preds, default_url="http://g/h") == []
    assert webhook_jobs(_model(), preds, default_url="") == []
    assert webhook_jobs(_model(), preds, default_url=None) == []
    only_positive = _model(n8n_send_modes=("positive_only",))
    assert webhook_jobs(only_positive, preds, default_url="http://g/h") == []


def test_one_job_per_coin_with_only_the_selected_predictions() -> None:
    preds = [_prediction(0.9, "CoinA"), _prediction(0.2, "CoinB"), _prediction(0.6, "CoinC")]
    model = _model(n8n_send_modes=("alerts_only", "negative_only"))
    jobs = webhook_jobs(model, preds, default_url="http://g/h", version="1")
    assert sorted(j.coin_id for j in jobs) == ["CoinA", "CoinB"]
    for job in jobs:
        assert job.active_model_ids == (7,) and job.model_ids == (41,)
        assert job.data_timestamp == T0
        payload = _body(job)
        assert payload["coin_id"] == job.coin_id
        assert [p["tag"] for p in payload["predictions"]] == (
            ["alert"] if job.coin_id == "CoinA" else ["negative"]
        )
        assert payload["metadata"]["total_predictions"] == 1


def test_idempotency_key_is_stable_and_distinct_per_model_coin_tick_and_url() -> None:
    preds = [_prediction(0.9)]
    first = webhook_jobs(_model(), preds, default_url="http://g/h")[0].idempotency_key
    again = webhook_jobs(_model(), preds, default_url="http://g/h")[0].idempotency_key
    assert first == again
    variants = [
        webhook_jobs(_model(active_model_id=8), preds, default_url="http://g/h")[0],
        webhook_jobs(_model(), [_prediction(0.9, "CoinB")], default_url="http://g/h")[0],
        webhook_jobs(
            _model(), [_prediction(0.9, at=T0 + timedelta(seconds=1))], default_url="http://g/h"
        )[0],
        webhook_jobs(_model(), preds, default_url="http://g/other")[0],
    ]
    keys = {job.idempotency_key for job in variants}
    assert len(keys) == 4 and first not in keys


def test_a_batch_becomes_one_job_per_url_and_coin_tick_with_every_models_item() -> None:
    low = _model(active_model_id=3, model_id=30, name="Low")
    high = _model(active_model_id=9, model_id=90, name="High", n8n_webhook_url="http://own/h")
    mid = _model(active_model_id=5, model_id=50, name="Mid", n8n_send_modes=("alerts_only",))
    later = T0 + timedelta(seconds=2)
    items = [
        # The model with the highest id committed first; CoinB's second tick is its own.
        *webhook_items(
            high, [_prediction(0.9), _prediction(0.2, "CoinB")], default_url="http://g/h"
        ),
        *webhook_items(
            low, [_prediction(0.6), _prediction(0.1, "CoinB", later)], default_url="http://g/h"
        ),
        *webhook_items(
            mid, [_prediction(0.8), _prediction(0.3, "CoinB")], default_url="http://g/h"
        ),
    ]
    jobs = {(j.target_url, j.coin_id, j.data_timestamp): j for j in tick_jobs(items, version="1")}
    assert sorted(jobs) == [
        ("http://g/h", "CoinA", T0),
        ("http://g/h", "CoinB", later),
        ("http://own/h", "CoinA", T0),
        ("http://own/h", "CoinB", T0),
    ]
    shared = jobs[("http://g/h", "CoinA", T0)]
    assert shared.active_model_ids == (3, 5) and shared.model_ids == (30, 50)
    payload = _body(shared)
    assert [p["model"]["name"] for p in payload["predictions"]] == ["Low", "Mid"]
    assert [p["probability"] for p in payload["predictions"]] == [0.6, 0.8]
    assert payload["metadata"] == {
        "total_predictions": 2,
        "alerts_count": 1,
        "service": "pump-predictor",
        "version": "1",
    }
    assert payload == build_payload(
        "CoinA", T0, [(low, _prediction(0.6)), (mid, _prediction(0.8))], "1"
    )


def test_a_tick_jobs_key_does_not_depend_on_the_models_it_carries() -> None:
    """Processing a tick again (after a stop) finds its job by the key, whichever
    models predicted it this time, so nothing is sent twice."""
    both = tick_jobs(
        [
            *webhook_items(_model(), [_prediction(0.9)], default_url="http://g/h"),
            *webhook_items(_model(active_model_id=8), [_prediction(0.1)], default_url="http://g/h"),
        ]
    )
    one = tick_jobs(webhook_items(_model(), [_prediction(0.3)], default_url="http://g/h"))
    assert [j.idempotency_key for j in both] == [j.idempotency_key for j in one]
    elsewhere = [
        tick_jobs(webhook_items(_model(), [_prediction(0.9, "CoinB")], default_url="http://g/h")),
        tick_jobs(webhook_items(_model(), [_prediction(0.9)], default_url="http://g/other")),
        tick_jobs(
            webhook_items(
                _model(), [_prediction(0.9, at=T0 + timedelta(seconds=1))], default_url="http://g/h"
            )
        ),
    ]
    keys = {jobs[0].idempotency_key for jobs in elsewhere}
    assert len(keys) == 3 and one[0].idempotency_key not in keys
    # A manual prediction's job is the model's own: it never blocks the tick's job.
    manual = webhook_jobs(_model(), [_prediction(0.3)], default_url="http://g/h")
    assert manual[0].idempotency_key != one[0].idempotency_key


def test_model_from_active_models_row_uses_the_custom_name() -> None:
    row = {
        "id": 3,
        "model_id": 12,
        "name": "rf-2026",
        "custom_name": "My RF",
        "model_type": "random_forest",
        "target_variable": "price_close",
        "target_operator": None,
        "target_value": None,
        "future_minutes": 10,
        "price_change_percent": 5.0,
        "target_direction": "down",
        "features": ["price_close"],
        "phases": [2],
        "alert_threshold": 0.8,
        "n8n_webhook_url": None,
        "n8n_enabled": True,
        "n8n_send_modes": ["alerts_only"],
    }
    model = WebhookModel.from_row(row)
    assert model.name == "My RF" and model.phases == (2,) and model.features == ("price_close",)
    assert WebhookModel.from_row({**row, "custom_name": None}).name == "rf-2026"


# ---- dispatcher rules (pure parts of actors/webhooks/dispatcher.py) ---------------------------


def _result(
    status: int | None, reason: str | None, retry_after: float | None = None
) -> DeliveryResult:
    return DeliveryResult(status, reason, None, retry_after, 0.01)


def _rules(**changes: object) -> WebhookDispatcher:
    options: dict[str, object] = {
        "timeout": 1.0,
        "concurrency": 2,
        "per_host_limit": 1,
        "max_age_seconds": 3600,
        "max_attempts": 5,
        "backoff_base": 1.0,
        "backoff_max": 60.0,
    }
    options.update(changes)
    return WebhookDispatcher(None, **options)  # type: ignore[arg-type]  # rules need no pool


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0  # past: now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") is None


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, None, "delivered"),
        (204, None, "delivered"),
        (500, "http_5xx", "retry"),
        (503, "http_5xx", "retry"),
        (429, "http_429", "retry"),
        (None, "timeout", "retry"),
        (None, "connection", "retry"),
        (400, "http_4xx", "failed"),
        (404, "http_4xx", "retry"),  # within the not-found grace (actors.webhooks.retry)
        (410, "http_4xx", "failed"),
        (301, "http_3xx", "failed"),
        (None, "invalid_url", "failed"),
    ],
)
def test_which_answers_are_retried(status: int | None, reason: str | None, outcome: str) -> None:
    decision, _ = _rules().decide(_result(status, reason), attempt=1, created_at=datetime.now(UTC))
    assert decision == outcome


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rules = _rules(backoff_base=1.0, backoff_max=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [rules.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered, so retries of many jobs spread out


def test_retry_after_wins_over_backoff_and_limits_make_a_job_dead() -> None:
    rules = _rules(max_attempts=3, max_age_seconds=100)
    now = datetime.now(UTC)
    assert rules.decide(_result(429, "http_429", 42.0), attempt=1, created_at=now) == (
        "retry",
        42.0,
    )
    assert rules.decide(_result(500, "http_5xx"), attempt=3, created_at=now)[0] == "dead"
    old = now - timedelta(seconds=99)
    assert rules.decide(_result(500, "http_5xx", 5.0), attempt=1, created_at=old)[0] == "dead"
    assert rules.decide(_result(429, "http_429", 500.0), attempt=1, created_at=now)[0] == "dead"


@given(
    probabilities=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=12),
    threshold=st.sampled_from([0.5, 0.7, 0.123456789, 1.0]),
    modes=st.lists(st.sampled_from(["all", "alerts_only", "positive_only", "negative_only"])),
    url=st.sampled_from([None, "http://127.0.0.1:9/own"]),
    enabled=st.booleans(),
)
def test_a_batchs_column_items_equal_the_items_of_its_reported_predictions(
    probabilities: list[float], threshold: float, modes: list[str], url: str | None, enabled: bool
) -> None:
    """The batcher builds items from its stored columns (`column_items`): the same items,
    byte for byte, as `webhook_items` of the same predictions one by one."""
    model = _model(
        alert_threshold=threshold,
        n8n_send_modes=tuple(modes),
        n8n_webhook_url=url,
        n8n_enabled=enabled,
    )
    reported = [
        ReportedPrediction(
            f"Coin{i % 3}",
            T0 + timedelta(seconds=i),
            int(p >= 0.5),
            p,
            tag_for(p, threshold),
            threshold,
        )
        for i, p in enumerate(probabilities)
    ]
    ticks = [(r.coin_id, r.data_timestamp, iso_timestamp(r.data_timestamp)) for r in reported]
    items = column_items(
        model,
        ticks,
        [r.prediction for r in reported],
        [r.probability for r in reported],
        [r.tag for r in reported],
        default_url="http://127.0.0.1:9/global",
    )
    assert items == webhook_items(model, reported, default_url="http://127.0.0.1:9/global")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_column_items_refuse_non_finite_probabilities_like_webhook_items(bad: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        column_items(
            _model(), [("C", T0, iso_timestamp(T0))], [1], [bad], ["alert"], default_url="u"
        )


def test_column_items_of_a_changed_model_carry_its_new_settings() -> None:
    """The per-model texts are kept per model object: new settings are a new object."""
    ticks = [("C", T0, iso_timestamp(T0))]
    for threshold in (0.7, 0.9, 0.7):
        model = _model(alert_threshold=threshold)
        (item,) = column_items(model, ticks, [1], [0.8], [tag_for(0.8, threshold)], default_url="u")
        sent = expand_snapshots(item.item_json, {item.snapshot.key: item.snapshot.json})
        assert json.loads(sent)["alert_threshold"] == threshold
        assert (
            item.item_json
            == webhook_items(
                model,
                [ReportedPrediction("C", T0, 1, 0.8, tag_for(0.8, threshold), threshold)],
                default_url="u",
            )[0].item_json
        )
