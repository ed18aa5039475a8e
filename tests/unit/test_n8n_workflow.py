"""docs/n8n/pump-alerts.json stays in step with the payload users' n8n receives.

The workflow is imported and activated as is (README "Connect n8n"), so every
field it reads must exist in what the dispatcher sends: the test walks the
workflow's chain over a real payload, in both payload forms.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors.webhooks.dispatcher import batch_body, delivery_headers
from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    build_payload,
    compact_model_json,
    model_snapshot,
)
from storage.outbox.jobs import ClaimedJob

WORKFLOW = Path(__file__).resolve().parents[2] / "docs" / "n8n" / "pump-alerts.json"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _workflow() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(WORKFLOW.read_text())
    return document


def _nodes_in_order(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    by_name = {node["name"]: node for node in workflow["nodes"]}
    targets = {
        target["node"]
        for outputs in workflow["connections"].values()
        for branch in outputs["main"]
        for target in branch
    }
    [start] = [name for name in by_name if name not in targets]
    chain = [by_name[start]]
    while chain[-1]["name"] in workflow["connections"]:
        [[following]] = workflow["connections"][chain[-1]["name"]]["main"]
        chain.append(by_name[following["node"]])
    return chain


def test_the_workflow_is_webhook_split_out_filter_format() -> None:
    workflow = _workflow()
    chain = _nodes_in_order(workflow)
    assert [node["type"] for node in chain] == [
        "n8n-nodes-base.webhook",
        "n8n-nodes-base.splitOut",
        "n8n-nodes-base.filter",
        "n8n-nodes-base.set",
    ]
    assert len(chain) == len(workflow["nodes"])
    webhook, split, keep, _ = chain
    assert webhook["parameters"]["path"] == "pump-alerts"
    assert webhook["parameters"]["httpMethod"] == "POST"
    # Answer at once: the dispatcher's slot is not held while the workflow runs.
    assert webhook["parameters"]["responseMode"] == "onReceived"
    assert split["parameters"]["fieldToSplitOut"] == "body.predictions"
    # Other fields would arrive under literal dotted keys ("body.coin_id") and a filter
    # on $json.is_alert would match nothing.
    assert split["parameters"]["include"] == "noOtherFields"
    [condition] = keep["parameters"]["conditions"]["conditions"]
    assert condition["leftValue"] == "={{ $json.is_alert }}"
    assert condition["operator"]["operation"] == "true"
    ids = [node["id"] for node in workflow["nodes"]]
    assert len(set(ids)) == len(ids)


def _model() -> WebhookModel:
    return WebhookModel(
        active_model_id=7,
        model_id=41,
        name="Pump hunter",
        model_type="xgboost",
        target_variable="price_close",
        target_operator=">",
        target_value=10.0,
        future_minutes=5,
        price_change_percent=10.0,
        target_direction="up",
        features=("price_close", "volume_sol"),
        phases=(1, 2),
        alert_threshold=0.7,
        n8n_webhook_url="http://n8n:5678/webhook/pump-alerts",
        n8n_enabled=True,
        n8n_send_modes=("all",),
    )


def _resolve(document: Any, path: str) -> Any:
    for part in re.findall(r"\.(\w+)|\['([\w-]+)'\]", path):
        key = part[0] or part[1]
        assert isinstance(document, dict) and key in document, f"{path}: no {key!r}"
        document = document[key]
    return document


@pytest.mark.parametrize("form", ["full", "compact"])
def test_every_field_the_workflow_reads_is_in_the_payload(form: str) -> None:
    model = _model()
    payload = build_payload(
        "CoinA",
        T0,
        [
            (model, ReportedPrediction("CoinA", T0, 1, 0.91, "alert", 0.7)),
            (model, ReportedPrediction("CoinA", T0, 0, 0.2, "negative", 0.7)),
        ],
    )
    if form == "compact":
        compact = json.loads(compact_model_json(model_snapshot(model).json))
        for item in payload["predictions"]:
            item["model"] = compact
    job = ClaimedJob(1, "k", "u", "CoinA", T0, (7,), (41,), "", "", 1, 1, "v", 0, T0, T0)
    # n8n gives the webhook node's headers lower-cased.
    headers = {k.lower(): v for k, v in delivery_headers([job], T0).items()}
    received = {"body": payload, "headers": headers}

    chain = _nodes_in_order(_workflow())
    items = _resolve(received, "." + chain[1]["parameters"]["fieldToSplitOut"])
    alerts = [item for item in items if item["is_alert"] is True]
    assert len(alerts) == 1  # what the filter lets through
    expressions = [a["value"] for a in chain[3]["parameters"]["assignments"]["assignments"]]
    text = " ".join(expressions)
    webhook_paths = re.findall(r"\$\('Pump webhook'\)\.item\.json((?:\.\w+|\['[\w-]+'\])+)", text)
    item_paths = re.findall(r"\$json((?:\.\w+)+)", text)
    assert webhook_paths and item_paths
    for path in webhook_paths:
        assert _resolve(received, path) is not None, path
    for path in item_paths:
        assert _resolve(alerts[0], path) is not None, path
    assert {a["name"] for a in chain[3]["parameters"]["assignments"]["assignments"]} >= {
        "coin_id",
        "probability",
        "message",
    }


BATCHED = WORKFLOW.with_name("pump-alerts-batched.json")


def test_the_batched_workflow_reads_every_field_from_a_real_batched_body() -> None:
    """docs/n8n/pump-alerts-batched.json over what WEBHOOK_BATCH_MAX_TICKS > 1 sends."""
    workflow: dict[str, Any] = json.loads(BATCHED.read_text())
    chain = _nodes_in_order(workflow)
    assert [node["type"] for node in chain] == [
        "n8n-nodes-base.webhook",
        "n8n-nodes-base.splitOut",
        "n8n-nodes-base.splitOut",
        "n8n-nodes-base.filter",
        "n8n-nodes-base.set",
    ]
    webhook, ticks, predictions, keep, form = chain
    assert webhook["parameters"]["responseMode"] == "onReceived"
    ids = [node["id"] for node in workflow["nodes"]]
    assert len(set(ids)) == len(ids) and not set(ids) & {n["id"] for n in _workflow()["nodes"]}

    model = _model()
    jobs = []
    for job_id, coin in enumerate(("CoinA", "CoinB"), start=1):
        payload = build_payload(
            coin,
            T0,
            [
                (model, ReportedPrediction(coin, T0, 1, 0.91, "alert", 0.7)),
                (model, ReportedPrediction(coin, T0, 0, 0.2, "negative", 0.7)),
            ],
        )
        items = json.dumps(payload["predictions"])[1:-1]
        jobs.append(
            ClaimedJob(
                job_id, f"k{job_id}", "u", coin, T0, (7,), (41,), T0.isoformat(), items,
                2, 1, "v", 0, T0, T0,
            )
        )  # fmt: skip
    body = json.loads(batch_body(jobs, sent_at=T0.isoformat()))
    headers = {k.lower(): v for k, v in delivery_headers(jobs, T0).items()}
    received = {"body": body, "headers": headers}

    # Split out the ticks (objects: their fields become the item's), then each tick's
    # predictions with the selected fields of the tick beside them, as n8n does.
    tick_items = _resolve(received, "." + ticks["parameters"]["fieldToSplitOut"])
    assert ticks["parameters"]["include"] == "noOtherFields"
    assert predictions["parameters"]["include"] == "selectedOtherFields"
    kept = [f.strip() for f in predictions["parameters"]["fieldsToInclude"].split(",")]
    items = [
        {**prediction, **{name: tick[name] for name in kept}}
        for tick in tick_items
        for prediction in _resolve(tick, "." + predictions["parameters"]["fieldToSplitOut"])
    ]
    [condition] = keep["parameters"]["conditions"]["conditions"]
    assert condition["leftValue"] == "={{ $json.is_alert }}"
    alerts = [item for item in items if item["is_alert"] is True]
    assert [a["coin_id"] for a in alerts] == ["CoinA", "CoinB"]
    assignments = form["parameters"]["assignments"]["assignments"]
    text = " ".join(a["value"] for a in assignments)
    webhook_paths = re.findall(r"\$\('Pump webhook'\)\.item\.json((?:\.\w+|\['[\w-]+'\])+)", text)
    item_paths = re.findall(r"\$json((?:\.\w+)+)", text)
    assert webhook_paths and item_paths
    for path in webhook_paths:
        assert _resolve(received, path) is not None, path
    for path in item_paths:
        assert _resolve(alerts[0], path) is not None, path
    assert {a["name"] for a in assignments} >= {"coin_id", "probability", "tick_at", "message"}
