"""Predictions: filter, page, export, and look at one coin around one prediction."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web.dashboard import common, visual
from web.dashboard.api_client import ApiClient

ALL = "all"
TAGS = (ALL, "negative", "positive", "alert")
OUTCOMES = (ALL, "success", "failed", "not_applicable", "pending")
PAGE_SIZES = (25, 50, 100, 500)
EXPORT_PAGE = 1000
EXPORT_MAX_ROWS = 20_000
COLUMNS = (
    "id",
    "coin_id",
    "active_model_id",
    "model",
    "data_timestamp",
    "probability",
    "tag",
    "outcome",
    "actual_change_pct",
    "price_close_at_t",
    "predicted_at",
    "evaluated_at",
)


def _day_start(day: date) -> str:
    return datetime.combine(day, time.min, tzinfo=UTC).isoformat()


def _filters(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The query of the filter widgets, in the API's parameter names."""
    names = {common.model_id(m): common.model_label(m) for m in models}
    top = st.columns(4)
    linked = st.query_params.get("coin")
    if linked and "pred_coin" not in st.session_state:
        st.session_state["pred_coin"] = linked
    coin = top[0].text_input("Coin (mint)", key="pred_coin").strip()
    model = top[1].selectbox(
        "Model",
        [None, *names],
        format_func=lambda i: "all models" if i is None else names.get(i, f"#{i}"),
        key="pred_model",
    )
    tag = top[2].selectbox("Tag", TAGS, key="pred_tag")
    outcome = top[3].selectbox("Outcome", OUTCOMES, key="pred_outcome")
    bottom = st.columns([2, 1, 1])
    low, high = bottom[0].slider(
        "Probability", min_value=0.0, max_value=1.0, value=(0.0, 1.0), step=0.01, key="pred_prob"
    )
    since = bottom[1].date_input("Data from (UTC day)", value=None, key="pred_from")
    until = bottom[2].date_input("Data to (UTC day, inclusive)", value=None, key="pred_to")
    query: dict[str, Any] = {
        "coin_id": coin or None,
        "active_model_id": model,
        "tag": None if tag == ALL else tag,
        "evaluation_result": None if outcome == ALL else outcome,
        "probability_min": low if low > 0.0 else None,
        "probability_max": high if high < 1.0 else None,
        "data_from": _day_start(since) if isinstance(since, date) else None,
        "data_to": _day_start(until + timedelta(days=1)) if isinstance(until, date) else None,
    }
    return {k: v for k, v in query.items() if v is not None}


def _table(rows: list[dict[str, Any]], names: dict[int | None, str]) -> pd.DataFrame:
    records = []
    for row in rows:
        record = {column: row.get(column) for column in COLUMNS}
        record["model"] = common.prediction_model(row, names)
        record["outcome"] = row.get("evaluation_result") or "pending"
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for column in ("data_timestamp", "predicted_at", "evaluated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame


def display(rows: list[dict[str, Any]], names: dict[int | None, str]) -> pd.DataFrame:
    """The table as a trader reads it: outcome, tag and probability first, short coin
    ids, model names; times as UTC text (no browser time zone in between)."""
    records = []
    for row in rows:
        at = common.parse_time(row.get("data_timestamp"))
        records.append(
            {
                "outcome": [row.get("evaluation_result") or "pending"],
                "tag": [row.get("tag") or "negative"],
                "probability": row.get("probability"),
                "coin": visual.short_coin(row.get("coin_id")),
                "model": common.prediction_model(row, names),
                "data time (UTC)": f"{at:%Y-%m-%d %H:%M:%S}" if at else common.MISSING,
                "actual change": row.get("actual_change_pct"),
                "id": row.get("id"),
            }
        )
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "outcome",
            "tag",
            "probability",
            "coin",
            "model",
            "data time (UTC)",
            "actual change",
            "id",
        ],
    )
    frame["actual change"] = pd.to_numeric(frame["actual change"], errors="coerce").astype(
        "float64"
    )
    return frame


def _column_config() -> dict[str, Any]:
    return {
        "outcome": visual.outcome_chips(),
        "tag": visual.tag_chips(),
        "probability": st.column_config.ProgressColumn(
            "probability", min_value=0.0, max_value=1.0, format="%.3f"
        ),
        "actual change": st.column_config.NumberColumn("actual change", format="%+.2f %%"),
        "id": st.column_config.NumberColumn("prediction", format="#%d", width="small"),
    }


def _export(api: ApiClient, query: dict[str, Any], names: dict[int | None, str]) -> None:
    if st.button("Prepare CSV of all matching rows", key="pred_export"):
        rows: list[dict[str, Any]] = []
        total = None
        with st.spinner("Reading predictions ..."):
            while len(rows) < EXPORT_MAX_ROWS:
                page = common.attempt(api.predictions, **query, limit=EXPORT_PAGE, offset=len(rows))
                if page is None:
                    return
                total, batch = page
                rows.extend(batch)
                if not batch or len(rows) >= total:
                    break
        if total is not None and total > len(rows):
            st.warning(f"Export holds the first {len(rows):,} of {total:,} rows.")
        st.download_button(
            f"Download {len(rows):,} rows (CSV)",
            _table(rows, names).to_csv(index=False),
            file_name="predictions.csv",
            mime="text/csv",
            key="pred_export_download",
        )


def price_path(detail: dict[str, Any], prediction: dict[str, Any]) -> pd.DataFrame:
    """Price as % change from the price at the prediction, over time."""
    points = common.as_points(detail)
    frame = pd.DataFrame(points, columns=["time", "price"])
    if frame.empty:
        return frame.assign(change_pct=[])
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    frame = frame.dropna().sort_values("time")
    reference = prediction.get("price_close_at_t")
    if not isinstance(reference, int | float) or reference == 0:
        at = pd.to_datetime(prediction.get("data_timestamp"), utc=True)
        before = frame[frame["time"] <= at]
        # The last trade at or before the prediction is the price then (CONTRACTS.md 2).
        reference = float(before["price"].iloc[-1] if not before.empty else frame["price"].iloc[0])
    if reference == 0:
        return frame.iloc[0:0].assign(change_pct=[])
    frame["change_pct"] = (frame["price"] / float(reference) - 1.0) * 100.0
    return frame


def _markers(prediction: dict[str, Any]) -> pd.DataFrame:
    marks = [
        {
            "time": prediction.get("data_timestamp"),
            "change_pct": 0.0,
            "event": f"prediction ({prediction.get('tag')})",
            "color": visual.TAG_COLORS.get(str(prediction.get("tag")), visual.GREY),
        }
    ]
    evaluated = common.first(
        prediction.get("eval_price_timestamp"),
        prediction.get("evaluated_at") if prediction.get("evaluation_result") else None,
    )
    change = prediction.get("actual_change_pct")
    if evaluated is not None and isinstance(change, int | float):
        outcome = str(prediction.get("evaluation_result") or "pending")
        marks.append(
            {
                "time": evaluated,
                "change_pct": float(change),
                "event": f"evaluation ({outcome.replace('_', ' ')})",
                "color": visual.OUTCOME_COLORS.get(outcome, visual.GREY),
            }
        )
    frame = pd.DataFrame(marks)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    return frame


def _detail(api: ApiClient, prediction: dict[str, Any], names: dict[int | None, str]) -> None:
    coin, model = prediction.get("coin_id"), prediction.get("active_model_id")
    st.subheader("Coin chart")
    st.code(str(coin), language=None)
    outcome = prediction.get("evaluation_result") or "pending"
    if prediction.get("model_mode") == common.SHADOW:
        st.info("Shadow model: this prediction was stored and evaluated, never sent.")
    st.caption(
        f"Prediction #{prediction.get('id')} of {common.prediction_model(prediction, names)}: "
        f"probability {common.number(prediction.get('probability'), 3)}, "
        f"tag {prediction.get('tag')}, outcome {outcome.replace('_', ' ')}, "
        f"actual change {common.number(prediction.get('actual_change_pct'), 2)} %"
    )
    detail = common.attempt(api.get, f"/api/models/{model}/coins/{coin}/details")
    if detail is None:
        return
    path = price_path(detail if isinstance(detail, dict) else {}, prediction)
    if path.empty:
        st.info("No price history for this coin around the prediction.")
        return
    span = visual.span_of(path["time"])
    line = (
        alt.Chart(path)
        .mark_line(color=visual.GREY)
        .encode(
            x=visual.utc_x("time", "time", span),
            y=alt.Y("change_pct:Q", title="price change from prediction (%)"),
            tooltip=[
                visual.utc_tooltip("time", "time"),
                alt.Tooltip("change_pct:Q", title="change %", format="+.2f"),
            ],
        )
    )
    markers = _markers(prediction)
    marks = (
        alt.Chart(markers)
        .mark_point(size=160, filled=True)
        .encode(
            x=visual.utc_x("time", "time", span),
            y="change_pct:Q",
            color=alt.Color(
                "event:N",
                scale=alt.Scale(domain=list(markers["event"]), range=list(markers["color"])),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["event:N", visual.utc_tooltip("time", "time")],
        )
    )
    st.altair_chart(line + marks, width="stretch")


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Predictions")
    models = common.quietly(api.models, include_inactive=True) or []
    names: dict[int | None, str] = {common.model_id(m): common.model_name(m) for m in models}
    query = _filters(models)
    controls = st.columns([1, 1, 4])
    size = controls[0].selectbox("Rows per page", PAGE_SIZES, key="pred_size")
    # A new filter starts at page 1 again; a stale page number would show an empty table.
    signature = repr(sorted(query.items())) + str(size)
    if st.session_state.get("_pred_signature") != signature:
        st.session_state["_pred_signature"] = signature
        st.session_state["pred_page"] = 1
    page = int(controls[1].number_input("Page", min_value=1, step=1, key="pred_page"))
    total, rows = common.need(api.predictions, **query, limit=size, offset=(page - 1) * size)
    pages = max(1, -(-total // size))
    controls[2].markdown(f"**{total:,}** matching predictions · page {page} of {pages}")
    if not rows:
        st.info(
            "No prediction matches these filters."
            if query
            else "No prediction yet. Predictions appear as soon as an active model sees "
            "new coin_metrics rows; import or activate a model first."
        )
    st.caption("Click a row to open its coin chart below.")
    event = st.dataframe(
        display(rows, names),
        hide_index=True,
        width="stretch",
        placeholder=common.MISSING,
        on_select="rerun",
        selection_mode="single-row",
        column_config=_column_config(),
        key="pred_table",
    )
    st.download_button(
        "Download this page (CSV)",
        _table(rows, names).to_csv(index=False),
        file_name=f"predictions_page_{page}.csv",
        mime="text/csv",
        key="pred_download",
    )
    _export(api, query, names)
    if not rows:
        return
    by_id = {row.get("id"): row for row in rows}
    selected = list(getattr(getattr(event, "selection", None), "rows", None) or [])
    # A click in the table picks the detail; the picker below still works afterwards
    # because a selection only counts when it changes.
    if selected and selected[0] < len(rows) and selected != st.session_state.get("_pred_selected"):
        st.session_state["pred_detail"] = rows[selected[0]].get("id")
    st.session_state["_pred_selected"] = selected
    # ?prediction=<id> (the overview's alert feed links here) opens that chart once.
    wanted = st.query_params.get("prediction")
    if wanted and wanted.isdigit() and not st.session_state.get("_pred_link_used"):
        st.session_state["_pred_link_used"] = True
        if int(wanted) in by_id:
            st.session_state["pred_detail"] = int(wanted)
    chosen = st.selectbox(
        "Coin detail for prediction",
        [None, *by_id],
        format_func=lambda i: (
            "select a row"
            if i is None
            else f"#{i} {visual.short_coin(by_id[i].get('coin_id'))} "
            f"p={common.number(by_id[i].get('probability'), 3)}"
        ),
        key="pred_detail",
    )
    if chosen is not None:
        _detail(api, by_id[chosen], names)
