"""An `active_models` row becomes the model a webhook reports, field by field, and a
stored job's items name exactly the model snapshots the dispatcher must load."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    build_payload,
    compact_model_json,
    expand_snapshots,
    model_snapshot,
    payload_json,
    snapshot_keys,
    snapshot_reference,
    tag_for,
    tick_jobs,
    webhook_items,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Every field a distinct, non-default value: a field read from the wrong column, dropped
# to None or replaced by a constant shows up as a difference.
ROW: dict[str, Any] = {
    "id": 3,
    "model_id": 12,
    "name": "rf-2026",
    "custom_name": "My RF",
    "model_type": "random_forest",
    "target_variable": "market_cap_close",
    "target_operator": ">=",
    "target_value": 12.5,
    "future_minutes": 10,
    "price_change_percent": 5.0,
    "target_direction": "down",
    "features": ["price_close", "volume_sol", "price_roc_5"],
    "phases": [2, 3],
    "alert_threshold": 0.8,
    "n8n_webhook_url": "http://n8n.example/webhook/x",
    "n8n_enabled": True,
    "n8n_send_modes": ["alerts_only", "positive_only"],
    "mode": "live",
}


def test_every_field_of_an_active_models_row_reaches_the_model() -> None:
    assert WebhookModel.from_row(ROW) == WebhookModel(
        active_model_id=3,
        model_id=12,
        name="My RF",
        model_type="random_forest",
        target_variable="market_cap_close",
        target_operator=">=",
        target_value=12.5,
        future_minutes=10,
        price_change_percent=5.0,
        target_direction="down",
        features=("price_close", "volume_sol", "price_roc_5"),
        phases=(2, 3),
        alert_threshold=0.8,
        n8n_webhook_url="http://n8n.example/webhook/x",
        n8n_enabled=True,
        n8n_send_modes=("alerts_only", "positive_only"),
    )


def test_what_the_row_may_leave_empty_or_give_in_another_type() -> None:
    model = WebhookModel.from_row(
        {
            **ROW,
            "custom_name": None,  # no custom name: the model's own name
            "phases": None,  # every phase
            "target_operator": None,
            "target_value": None,
            "n8n_webhook_url": None,
            "alert_threshold": Decimal("0.65"),  # numeric columns may come as Decimal
        }
    )
    assert (model.name, model.phases, model.target_operator, model.target_value) == (
        "rf-2026",
        None,
        None,
        None,
    )
    assert model.n8n_webhook_url is None
    assert model.alert_threshold == 0.65 and type(model.alert_threshold) is float
    assert WebhookModel.from_row({**ROW, "phases": ["1", 4]}).phases == (1, 4)


@pytest.mark.parametrize(
    ("enabled", "mode", "sends"),
    [
        (True, "live", True),
        (True, None, True),  # a row from before shadow mode has no mode column
        (True, "shadow", False),  # a shadow model is never sent, whatever its switch says
        (False, "live", False),
        (False, "shadow", False),
    ],
)
def test_only_an_enabled_live_model_sends(enabled: bool, mode: str | None, sends: bool) -> None:
    row = {**ROW, "n8n_enabled": enabled}
    if mode is None:
        del row["mode"]
    else:
        row["mode"] = mode
    assert WebhookModel.from_row(row).n8n_enabled is sends


KEY_A, KEY_B = "a" * 64, "0123456789abcdef" * 4


def test_snapshot_keys_reads_our_references_and_postgresql_jsonb_text() -> None:
    ours = (
        f'[{{"model":{snapshot_reference(KEY_A)},"p":1}},{{"model":{snapshot_reference(KEY_B)}}}]'
    )
    # jsonb's text output puts a space after ':' and ','.
    jsonb = (
        f'[{{"model": {{"snapshot": "{KEY_A}"}}, "p": 1}}, {{"model": {{"snapshot": "{KEY_A}"}}}}]'
    )
    assert snapshot_keys(ours) == {KEY_A, KEY_B}
    assert snapshot_keys(jsonb) == {KEY_A}  # a key referred to twice is loaded once
    assert snapshot_keys('[{"model":{"id":1,"name":"inline"}}]') == set()
    assert snapshot_keys("[]") == set()


@pytest.mark.parametrize(
    "text",
    [
        '{"snapshot":"' + "a" * 63 + '"}',  # too short
        '{"snapshot":"' + "a" * 65 + '"}',  # too long
        '{"snapshot":"' + "A" * 64 + '"}',  # SHA-256 hex digests are lower case
        '{"snapshot":"' + "g" * 64 + '"}',  # not hex
        '{"snapshot":"' + "a" * 64 + '","x":1}',  # not a reference alone
        '{"name":"' + "a" * 64 + '"}',  # another key
    ],
)
def test_text_that_is_not_a_reference_names_no_snapshot(text: str) -> None:
    assert snapshot_keys(text) == set()


def test_a_jobs_items_name_exactly_the_snapshots_it_carries() -> None:
    """The dispatcher loads the snapshots `snapshot_keys` names before expanding a job;
    for a job made by tick_jobs that is every model of the job and nothing else."""
    models = [
        WebhookModel.from_row({**ROW, "id": 3, "model_id": 12}),
        WebhookModel.from_row({**ROW, "id": 4, "model_id": 13, "custom_name": "Other"}),
    ]
    items = [
        item
        for model in models
        for item in webhook_items(
            model,
            [ReportedPrediction("CoinA", T0, 1, 0.9, tag_for(0.9, 0.8), 0.8)],
            default_url=None,
        )
    ]
    (job,) = tick_jobs(items)
    payload = json.loads(job.payload)
    items_json = json.dumps(payload["predictions"])
    carried = {s.key: s.json for s in job.snapshots}
    assert snapshot_keys(items_json) == set(carried) == {model_snapshot(m).key for m in models}
    expanded = json.loads(expand_snapshots(items_json, carried))
    assert [p["model"]["name"] for p in expanded] == ["My RF", "Other"]


def test_the_envelope_counts_alerts_and_carries_sent_at_only_when_given() -> None:
    model = WebhookModel.from_row(ROW)
    items = [
        (model, ReportedPrediction(coin, T0, int(p >= 0.5), p, tag_for(p, 0.8), 0.8))
        for coin, p in (("A", 0.9), ("A", 0.95), ("A", 0.6))
    ]
    payload = build_payload("A", T0, items, "1.2.3")
    assert payload["metadata"]["alerts_count"] == 2
    assert payload["metadata"]["total_predictions"] == 3
    assert "sent_at" not in payload["metadata"]
    sent = payload_json("A", "t", "", total_predictions=0, alerts_count=0, version="1", sent_at="s")
    assert json.loads(sent)["metadata"]["sent_at"] == "s"


def test_a_tick_jobs_predictions_are_ordered_by_active_model_whatever_the_input_order() -> None:
    models = [WebhookModel.from_row({**ROW, "id": i, "model_id": 10 + i}) for i in (9, 2, 5)]
    items = [
        item
        for model in models
        for item in webhook_items(
            model, [ReportedPrediction("A", T0, 1, 0.9, "alert", 0.8)], default_url=None
        )
    ]
    (job,) = tick_jobs(items)
    assert job.active_model_ids == (2, 5, 9)
    expanded = expand_snapshots(
        json.dumps(json.loads(job.payload)["predictions"]), {s.key: s.json for s in job.snapshots}
    )
    assert [p["model"]["active_model_id"] for p in json.loads(expanded)] == [2, 5, 9]


def test_the_compact_model_object_keeps_who_and_what_without_features_or_phases() -> None:
    model = WebhookModel.from_row(ROW)
    full = json.loads(model_snapshot(model).json)
    compact = json.loads(compact_model_json(model_snapshot(model).json))
    assert compact == {k: v for k, v in full.items() if k not in ("features", "phases")}
    assert list(compact) == [k for k in full if k not in ("features", "phases")]
