"""One visual language for every page: colours, chips, UTC time axes, bin sizes.

Green is a pump or a success, red a failure, grey neutral or unknown, and an
alert is the one loud colour (amber). Every time axis is drawn in UTC with
24-hour labels (Vega-Lite would otherwise use the browser's zone and a 12-hour
clock), and the title says so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

GREEN = "#2e7d32"
LIGHT_GREEN = "#81c784"
RED = "#c62828"
GREY = "#9e9e9e"
LIGHT_GREY = "#cfd8dc"
ALERT = "#ff8f00"

TAG_COLORS = {"negative": GREY, "positive": LIGHT_GREEN, "alert": ALERT}
OUTCOME_COLORS = {
    "success": GREEN,
    "failed": RED,
    "not_applicable": GREY,
    "pending": LIGHT_GREY,
}
# Several models on one chart: distinct, none of them the success/failure/alert colours.
MODEL_PALETTE = ["#1565c0", "#6a1b9a", "#00838f", "#4e342e", "#ad1457", "#37474f"]


def tag_scale() -> alt.Scale:
    return alt.Scale(domain=list(TAG_COLORS), range=list(TAG_COLORS.values()))


def outcome_scale() -> alt.Scale:
    return alt.Scale(domain=list(OUTCOME_COLORS), range=list(OUTCOME_COLORS.values()))


def model_scale(names: list[str]) -> alt.Scale:
    return alt.Scale(domain=names, range=MODEL_PALETTE[: max(1, len(names))] or MODEL_PALETTE)


def tag_chips(label: str = "tag") -> Any:
    """A table column whose values (one-element lists) show as coloured chips."""
    return st.column_config.MultiselectColumn(
        label, options=list(TAG_COLORS), color=list(TAG_COLORS.values()), width="small"
    )


def outcome_chips(label: str = "outcome") -> Any:
    return st.column_config.MultiselectColumn(
        label,
        options=list(OUTCOME_COLORS),
        color=list(OUTCOME_COLORS.values()),
        format_func=lambda v: v.replace("_", " "),
        width="small",
    )


def time_format(span: timedelta) -> str:
    """24-hour labels; seconds on a short axis, the date when it spans days."""
    if span <= timedelta(minutes=10):
        return "%H:%M:%S"
    return "%H:%M" if span <= timedelta(days=1) else "%d %b %H:%M"


def utc_x(
    field: str,
    title: str,
    span: timedelta | None = None,
    domain: list[str] | None = None,
    **kwargs: Any,
) -> alt.X:
    """A time axis in UTC, 24-hour, labelled with the zone (`domain`: ISO ends)."""
    label = f"{title} (UTC)" if "UTC" not in title else title
    scale = alt.Scale(type="utc", domain=domain) if domain else alt.Scale(type="utc")
    return alt.X(
        f"{field}:T",
        title=label,
        scale=scale,
        axis=alt.Axis(format=time_format(span or timedelta(days=1)), labelOverlap=True),
        **kwargs,
    )


def utc_tooltip(field: str, title: str) -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", title=f"{title} (UTC)", format="%Y-%m-%d %H:%M:%S")


def bin_for(span: timedelta) -> timedelta:
    """A bin giving roughly 20-100 bars over the span (5 s for two minutes, 1 min for an
    hour, 15 min for a day, 3 h for longer)."""
    for limit, size in (
        (timedelta(minutes=2), timedelta(seconds=5)),
        (timedelta(minutes=10), timedelta(seconds=15)),
        (timedelta(minutes=30), timedelta(seconds=30)),
        (timedelta(hours=1), timedelta(minutes=1)),
        (timedelta(hours=6), timedelta(minutes=5)),
        (timedelta(hours=24), timedelta(minutes=15)),
        (timedelta(days=3), timedelta(hours=1)),
    ):
        if span <= limit:
            return size
    return timedelta(hours=3)


def span_of(times: pd.Series) -> timedelta:
    valid = times.dropna()
    if valid.empty:
        return timedelta(hours=1)
    return max(timedelta(minutes=1), (valid.max() - valid.min()).to_pytimedelta())


def bin_label(size: timedelta) -> str:
    seconds = int(size.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 3600 else f"{seconds // 3600} h"


def short_coin(coin: Any) -> str:
    """`AbCd…WxYz`: enough to tell coins apart in a table; the full id is one click away."""
    text = str(coin or "")
    return text if len(text) <= 12 else f"{text[:4]}…{text[-4:]}"
