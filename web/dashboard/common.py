"""What every page shares: the API client, error display, and reading API answers.

Some answers (models, statistics) come from routes whose field names grew from
the original service; `dig` reads the first of several names so a page shows a
value when the API has it and "—" when it does not, never a made-up number.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import streamlit as st

from web.dashboard.api_client import ApiClient, ApiUnreachable, DashboardApiError

T = TypeVar("T")
MISSING = "—"


def client() -> ApiClient:
    """One client (and HTTP connection pool) per browser session."""
    current = st.session_state.get("_api_client")
    if not isinstance(current, ApiClient):
        current = ApiClient.from_env()
        st.session_state["_api_client"] = current
    return current


def unreachable_message(exc: ApiUnreachable) -> str:
    return (
        f"The pump-predictor API is unreachable at {exc.url} ({exc.reason}). "
        "Start it with `pump-predictor serve`, or point API_BASE_URL at it."
    )


def show_error(exc: Exception) -> None:
    if isinstance(exc, ApiUnreachable):
        st.error(unreachable_message(exc))
    elif isinstance(exc, DashboardApiError):
        # Verbatim: the API's messages name the field or the reason already.
        st.error(exc.message)
    else:
        st.error(f"{type(exc).__name__}: {exc}")


def need(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The answer, or an error on the page and the page stops there."""
    try:
        return fn(*args, **kwargs)
    except (ApiUnreachable, DashboardApiError) as exc:
        show_error(exc)
        stop()


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """The answer, or None with the error shown; the rest of the page still renders."""
    try:
        return fn(*args, **kwargs)
    except (ApiUnreachable, DashboardApiError) as exc:
        show_error(exc)
        return None


def quietly(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """An optional extra: None when the API cannot give it (the page says "—")."""
    try:
        return fn(*args, **kwargs)
    except (ApiUnreachable, DashboardApiError):
        return None


def stop() -> NoReturn:
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises; this keeps type checkers honest


def dig(data: Any, *paths: str, default: Any = None) -> Any:
    """The first non-null value among dotted paths (`"live.success_rate"`)."""
    for path in paths:
        value = data
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                value = None
                break
        if value is not None:
            return value
    return default


def first(*values: Any) -> Any:
    """The first value that is not None (0 and 0.0 are values, unlike with `or`)."""
    return next((v for v in values if v is not None), None)


def model_id(model: dict[str, Any]) -> int | None:
    value = dig(model, "id", "active_model_id")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def model_name(model: dict[str, Any]) -> str:
    return str(dig(model, "custom_name", "name", default=f"model {model_id(model)}"))


SHADOW = "shadow"


def model_label(model: dict[str, Any]) -> str:
    state = "" if dig(model, "is_active", default=True) else " (inactive)"
    mode = " (shadow)" if model.get("mode") == SHADOW else ""
    return f"#{model_id(model)} {model_name(model)}{mode}{state}"


def prediction_model(row: dict[str, Any], names: dict[int | None, str]) -> str:
    """The model of a prediction row, marked when that model runs in shadow: its
    predictions are stored and evaluated but never sent, and must not read as alerts
    someone received."""
    ident = row.get("active_model_id")
    name = names.get(ident, row.get("model_name")) or f"#{ident}"
    return f"{name} (shadow)" if row.get("model_mode") == SHADOW else str(name)


def training_metric(model: dict[str, Any], metric: str) -> float | None:
    value = dig(
        model,
        f"training_metrics.{metric}",
        f"training_metrics.training_{metric}",
        f"training_{metric}",
        metric,
    )
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def target_text(model: dict[str, Any]) -> str:
    """The label definition as a sentence (CONTRACTS.md section 2)."""
    time_based = dig(model, "params._time_based")
    operator = model.get("target_operator")
    if operator and not (isinstance(time_based, dict) and time_based.get("enabled")):
        return f"{model.get('target_variable')} {operator} {model.get('target_value')}"
    minutes = dig(model, "future_minutes", "params._time_based.future_minutes")
    percent = dig(
        model, "price_change_percent", "params._time_based.min_percent_change", default="?"
    )
    direction = dig(model, "target_direction", "params._time_based.direction", default="up")
    sign = "+" if direction == "up" else "−"
    return f"price {sign}{percent}% within {minutes} min"


def as_points(detail: Any) -> list[tuple[Any, float]]:
    """(time, price) pairs of a coin-details answer's price history."""
    history = dig(detail, "price_history", "prices", "history", "coin_metrics", default=[])
    points: list[tuple[Any, float]] = []
    for point in history if isinstance(history, list) else []:
        at = dig(point, "timestamp", "time", "t")
        price = dig(point, "price_close", "price", "close")
        if at is not None and isinstance(price, int | float) and not isinstance(price, bool):
            points.append((at, float(price)))
    return points


def percent(value: Any, digits: int = 1) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value * 100:.{digits}f}%"


def number(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ago(value: Any) -> str:
    """An ISO time as '5 min ago' (short enough for a metric tile)."""
    parsed = parse_time(value)
    return MISSING if parsed is None else _ago(parsed)


def when(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS UTC (5 min ago)'."""
    parsed = parse_time(value)
    if parsed is None:
        return MISSING
    return f"{parsed.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({_ago(parsed)})"


def _ago(parsed: datetime) -> str:
    seconds = (datetime.now(UTC) - parsed).total_seconds()
    if seconds < 0:
        ago = "in the future"
    elif seconds < 120:
        ago = f"{seconds:.0f} s ago"
    elif seconds < 7200:
        ago = f"{seconds / 60:.0f} min ago"
    elif seconds < 172800:
        ago = f"{seconds / 3600:.0f} h ago"
    else:
        ago = f"{seconds / 86400:.0f} days ago"
    return ago


def rerun_with(message: str) -> NoReturn:
    """Show `message` once after the rerun that reloads the data a change touched."""
    st.session_state["_flash"] = message
    st.rerun()


def flash() -> None:
    message = st.session_state.pop("_flash", None)
    if message:
        st.success(message)


def webhook_losses(api: ApiClient, body: Any, *, key: str, scope: dict[str, Any]) -> None:
    """Dead and waiting webhook jobs, loud, with one button that queues them all again.

    `body` is n8n-status or /api/webhooks/losses; `scope` is the retry-all filter
    (`{"active_model_id": id}` for one model, `{}` for every model)."""
    if not isinstance(body, dict) or body.get("status") != "degraded":
        return
    reasons = [str(r) for r in body.get("reasons") or []]
    st.error("Webhook alerts are not reaching n8n:\n\n" + "\n".join(f"- {r}" for r in reasons))
    if st.button("Retry all dead and waiting jobs", key=key):
        done = attempt(
            api.post, "/api/webhooks/retry-all", {"statuses": ["dead", "waiting"], **scope}
        )
        if isinstance(done, dict):
            rerun_with("Dead and waiting webhook jobs queued again.")
