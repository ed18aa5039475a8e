"""Statistics: how one model does live, next to how it did in training."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web.dashboard import common, visual
from web.dashboard.api_client import ApiClient

SAMPLE = 1000  # newest predictions the charts are drawn from (the API's page maximum)
QUALITY = ("accuracy", "precision", "recall", "f1")


def confusion(frame: pd.DataFrame) -> dict[str, int]:
    """Live confusion matrix of evaluated predictions.

    An evaluation says whether the prediction came true, so a `success` of a
    1 is a true positive and a `failed` 0 is a missed pump (false negative).
    """
    done = frame[frame["evaluation_result"].isin(["success", "failed"])]
    hit = done["evaluation_result"] == "success"
    yes = done["prediction"] == 1
    return {
        "tp": int((yes & hit).sum()),
        "fp": int((yes & ~hit).sum()),
        "tn": int((~yes & hit).sum()),
        "fn": int((~yes & ~hit).sum()),
    }


def _matrix_chart(matrix: dict[str, int]) -> alt.LayerChart:
    """2x2 with room to read: green where the model was right, red where it was wrong."""
    cells = pd.DataFrame(
        [
            {"predicted": "pump", "actual": "pump", "count": matrix["tp"], "right": "right"},
            {"predicted": "pump", "actual": "no pump", "count": matrix["fp"], "right": "wrong"},
            {"predicted": "no pump", "actual": "no pump", "count": matrix["tn"], "right": "right"},
            {"predicted": "no pump", "actual": "pump", "count": matrix["fn"], "right": "wrong"},
        ]
    )
    order = ["pump", "no pump"]
    base = alt.Chart(cells).encode(
        x=alt.X("predicted:N", sort=order, title="predicted", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("actual:N", sort=order, title="actual"),
    )
    return alt.layer(
        base.mark_rect(opacity=0.85).encode(
            color=alt.Color(
                "right:N",
                scale=alt.Scale(domain=["right", "wrong"], range=[visual.GREEN, visual.RED]),
                legend=None,
            ),
            tooltip=["predicted:N", "actual:N", "count:Q"],
        ),
        base.mark_text(fontSize=22, color="white", fontWeight="bold").encode(text="count:Q"),
    ).properties(width=360, height=260)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [
        "data_timestamp",
        "predicted_at",
        "probability",
        "prediction",
        "tag",
        "evaluation_result",
        "actual_change_pct",
    ]
    frame = pd.DataFrame.from_records(
        [{c: row.get(c) for c in columns} for row in rows], columns=columns
    )
    for column in ("data_timestamp", "predicted_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    frame["probability"] = pd.to_numeric(frame["probability"], errors="coerce")
    frame["actual_change_pct"] = pd.to_numeric(frame["actual_change_pct"], errors="coerce")
    return frame


def _quality(model: dict[str, Any], stats: dict[str, Any] | None, frame: pd.DataFrame) -> None:
    live_matrix = common.dig(stats or {}, "live.confusion_matrix", "live_confusion_matrix")
    matrix = live_matrix if isinstance(live_matrix, dict) else confusion(frame)
    tp, fp, tn, fn = (int(matrix.get(k, 0)) for k in ("tp", "fp", "tn", "fn"))
    evaluated = tp + fp + tn + fn
    live = {
        "accuracy": (tp + tn) / evaluated if evaluated else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None,
    }
    cols = st.columns(len(QUALITY))
    for col, name in zip(cols, QUALITY, strict=True):
        trained = common.first(
            common.dig(stats or {}, f"comparison.{name}.training"),
            common.training_metric(model, name),
        )
        col.metric(f"live {name}", common.percent(live[name]))
        col.caption(f"training: {common.percent(trained)}")
    st.caption(f"{evaluated:,} evaluated predictions")
    st.markdown("**Live confusion matrix** (evaluated predictions)")
    st.altair_chart(_matrix_chart({"tp": tp, "fp": fp, "tn": tn, "fn": fn}), width="content")


def _alerts(stats: dict[str, Any] | None) -> None:
    """Alert outcomes and the sum of their actual changes (profit, loss, net)."""
    if not stats:
        return
    cols = st.columns(5)
    cols[0].metric("Alerts", common.number(common.dig(stats, "alerts.total")))
    cols[1].metric("Alert success rate", common.percent(common.dig(stats, "alerts.success_rate")))
    cols[2].metric("Profit (sum %)", common.number(common.dig(stats, "alert_changes.profit_pct")))
    cols[3].metric("Loss (sum %)", common.number(common.dig(stats, "alert_changes.loss_pct")))
    cols[4].metric("Net (sum %)", common.number(common.dig(stats, "alert_changes.net_pct")))


def _charts(frame: pd.DataFrame) -> None:
    span = visual.span_of(frame["data_timestamp"])
    size = visual.bin_for(span)
    floor = frame["data_timestamp"].dt.floor(size)
    binned = frame.assign(bin=floor, bin_end=floor + size)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Predictions over time** · {visual.bin_label(size)} bins")
        st.altair_chart(
            alt.Chart(binned)
            .mark_bar()
            .encode(
                x=visual.utc_x("bin", "data time", span),
                x2="bin_end:T",
                y=alt.Y("count():Q", title="predictions"),
                color=alt.Color("tag:N", scale=visual.tag_scale(), title="tag"),
                tooltip=[visual.utc_tooltip("bin", "bin start"), "tag:N", "count():Q"],
            ),
            width="stretch",
        )
    with right:
        st.markdown("**Probability histogram**")
        st.altair_chart(
            alt.Chart(frame)
            .mark_bar()
            .encode(
                x=alt.X("probability:Q", bin=alt.Bin(extent=[0, 1], step=0.05)),
                y=alt.Y("count():Q", title="predictions"),
                color=alt.Color("tag:N", scale=visual.tag_scale(), title="tag"),
            ),
            width="stretch",
        )
    alerts = frame[(frame["tag"] == "alert") & frame["actual_change_pct"].notna()]
    st.markdown("**Cumulative actual change of evaluated alerts (sum of %)**")
    if alerts.empty:
        st.caption("No evaluated alert yet.")
        return
    alerts = alerts.sort_values("data_timestamp").assign(
        cumulative_change_pct=lambda f: f["actual_change_pct"].cumsum(),
        outcome=lambda f: f["evaluation_result"].fillna("pending"),
    )
    alert_span = visual.span_of(alerts["data_timestamp"])
    line = (
        alt.Chart(alerts)
        .mark_line(color=visual.GREY)
        .encode(
            x=visual.utc_x("data_timestamp", "data time", alert_span),
            y=alt.Y("cumulative_change_pct:Q", title="cumulative change (%)"),
        )
    )
    points = (
        alt.Chart(alerts)
        .mark_point(filled=True, size=80)
        .encode(
            x=visual.utc_x("data_timestamp", "data time", alert_span),
            y="cumulative_change_pct:Q",
            color=alt.Color("outcome:N", scale=visual.outcome_scale(), title="outcome"),
            tooltip=[
                visual.utc_tooltip("data_timestamp", "data time"),
                "outcome:N",
                alt.Tooltip("actual_change_pct:Q", format="+.2f"),
            ],
        )
    )
    st.altair_chart(line + points, width="stretch")


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Statistics")
    models = common.need(api.models, include_inactive=True)
    if not models:
        st.info("No model imported yet.")
        return
    by_id = {common.model_id(m): m for m in models if common.model_id(m) is not None}
    chosen = st.selectbox(
        "Model", list(by_id), format_func=lambda i: common.model_label(by_id[i]), key="stats_model"
    )
    ident = chosen if chosen in by_id else next(iter(by_id))
    assert ident is not None
    model = by_id[ident]
    stats = common.attempt(api.get, f"/api/models/{ident}/statistics")
    total, rows = common.need(api.predictions, active_model_id=ident, limit=SAMPLE)
    frame = _frame(rows)
    st.caption(
        f"{total:,} predictions in all; charts use the newest {len(rows):,}."
        if total > len(rows)
        else f"{total:,} predictions."
    )
    _quality(model, stats if isinstance(stats, dict) else None, frame)
    _alerts(stats if isinstance(stats, dict) else None)
    if frame.empty:
        st.info("No predictions yet for this model.")
        return
    _charts(frame)
