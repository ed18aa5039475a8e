"""Backtest: what a model would have alerted on over a past range, and how those alerts did.

Runs through the API (`POST /api/backtests`, a worker process on the service's
side), shows its progress, then the summary's threshold table as charts, the
cumulative change of the alerts over time, and each alert with its coin chart.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web.dashboard import common, visual
from web.dashboard.api_client import ApiClient

ALERTS_SHOWN = 1000  # the API's page maximum: the alert list and the cumulative chart


def _model_choices(api: ApiClient) -> dict[str, int]:
    """Training Service model id by label: available models and imported ones."""
    choices: dict[str, int] = {}
    for model in common.quietly(api.available_models) or []:
        if isinstance(model.get("id"), int):
            choices[f"{model['id']} {model.get('name', '')} (available)"] = model["id"]
    for model in common.quietly(api.models) or []:
        ts_id = model.get("model_id")
        if isinstance(ts_id, int):
            shadow = ", shadow" if model.get("mode") == common.SHADOW else ""
            choices[f"{ts_id} {common.model_name(model)} (imported{shadow})"] = ts_id
    return choices


def _start_form(api: ApiClient) -> None:
    choices = _model_choices(api)
    with st.form("backtest"):
        label = st.selectbox("Model", list(choices)) if choices else None
        manual = st.number_input("…or a Training Service model id", min_value=0, step=1)
        today = datetime.now(UTC).date()
        start, end = st.columns(2)
        first: date = start.date_input("From (UTC)", today - timedelta(days=7))
        last: date = end.date_input("To (UTC)", today)
        if st.form_submit_button("Run backtest"):
            model_id = int(manual) if manual else (choices[label] if label else None)
            if model_id is None:
                st.error("model_id: pick a model or type its id")
                return
            body = {
                "model_id": model_id,
                "from": datetime.combine(first, datetime.min.time(), UTC).isoformat(),
                "to": datetime.combine(last, datetime.max.time(), UTC).isoformat(),
            }
            created = common.attempt(api.post, "/api/backtests", body)
            if isinstance(created, dict):
                st.session_state["backtest_id"] = created["id"]


def _threshold_charts(summary: dict[str, Any]) -> None:
    table = pd.DataFrame(summary.get("thresholds") or [])
    if table.empty:
        return
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(table)
        .mark_line(point=True)
        .encode(x="threshold:Q", y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1])))
        .properties(title="Precision against threshold"),
        use_container_width=True,
    )
    right.altair_chart(
        alt.Chart(table)
        .mark_line(point=True)
        .encode(x="threshold:Q", y="alerts_per_hour:Q")
        .properties(title="Alerts per hour against threshold"),
        use_container_width=True,
    )
    st.dataframe(table, hide_index=True, use_container_width=True)


def _alerts(api: ApiClient, backtest_id: int) -> None:
    page = common.attempt(
        api.get, f"/api/backtests/{backtest_id}/ticks", tag="alert", limit=ALERTS_SHOWN
    )
    if not isinstance(page, dict):
        return
    alerts = pd.DataFrame(page.get("items") or [])
    st.subheader(f"Alerts ({page.get('total', 0)}; the first {len(alerts)} shown)")
    if alerts.empty:
        return
    alerts["timestamp"] = pd.to_datetime(alerts["timestamp"], utc=True)
    judged = alerts.dropna(subset=["actual_change_pct"]).sort_values("timestamp")
    if not judged.empty:
        judged = judged.assign(cumulative_change_pct=judged["actual_change_pct"].cumsum())
        st.altair_chart(
            alt.Chart(judged)
            .mark_line(color=visual.GREY, point=alt.OverlayMarkDef(color=visual.ALERT))
            .encode(
                x=visual.utc_x("timestamp", "alert time", visual.span_of(judged["timestamp"])),
                y="cumulative_change_pct:Q",
            )
            .properties(title="Cumulative change of the alerts (% per alert, summed)"),
            use_container_width=True,
        )
    st.dataframe(alerts, hide_index=True, use_container_width=True)
    labels = [f"{r.mint} {r.timestamp.isoformat()}" for r in alerts.itertuples()]
    chosen = st.selectbox("Coin chart of alert", labels)
    if chosen:
        mint, at = chosen.split(" ", 1)
        detail = common.attempt(
            api.get, f"/api/backtests/{backtest_id}/coins/{mint}", at=at, minutes=30
        )
        points = pd.DataFrame((detail or {}).get("points") or [])
        if not points.empty:
            points["timestamp"] = pd.to_datetime(points["timestamp"], utc=True)
            span = visual.span_of(points["timestamp"])
            line = (
                alt.Chart(points)
                .mark_line(color=visual.GREY)
                .encode(x=visual.utc_x("timestamp", "time", span), y="price_close:Q")
            )
            rule = (
                alt.Chart(pd.DataFrame({"at": [pd.Timestamp(at)]}))
                .mark_rule(color=visual.ALERT, strokeWidth=2)
                .encode(x=visual.utc_x("at", "time", span))
            )
            st.altair_chart(line + rule, use_container_width=True)


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Backtest")
    st.caption(
        "Scores every recorded tick of the range with the model (not activated, nothing "
        "sent to webhooks) and judges it with the evaluator's outcome definition."
    )
    _start_form(api)
    recent = common.quietly(api.get, "/api/backtests", limit=20) or {}
    items = recent.get("items") or []
    if not items:
        return
    ids = [b["id"] for b in items]
    current = st.session_state.get("backtest_id")
    index = ids.index(current) if current in ids else 0
    backtest_id = st.selectbox(
        "Backtest",
        ids,
        index=index,
        format_func=lambda i: next(
            f"#{b['id']} model {b['model_id']} · {b['status']}" for b in items if b["id"] == i
        ),
    )
    backtest = common.need(api.get, f"/api/backtests/{backtest_id}")
    status = backtest["status"]
    if status in ("queued", "running"):
        fraction = backtest["progress"]["fraction"] or 0.0
        st.progress(fraction, text=f"{status}: {backtest['progress']['ticks_done']} ticks")
        time.sleep(1.0)
        st.rerun()
    if status == "failed":
        st.error(backtest.get("error") or "failed")
        return
    summary = backtest.get("summary") or {}
    headline = ("ticks", "coins", "alerts", "precision", "recall", "f1")
    for col, key in zip(st.columns(len(headline)), headline, strict=True):
        value = summary.get(key)
        col.metric(key, common.number(value, 3) if isinstance(value, float) else value)
    _threshold_charts(summary)
    _alerts(api, backtest_id)
    if st.button("Delete this backtest"):
        common.attempt(api.delete, f"/api/backtests/{backtest_id}")
        st.session_state.pop("backtest_id", None)
        st.rerun()
