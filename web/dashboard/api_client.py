"""A small synchronous client of pump-predictor's REST API, for the dashboard.

Synchronous on purpose: a Streamlit script runs top to bottom in a thread of its
own, so an event loop would buy nothing. The dashboard never reads the database;
everything it shows comes through here, and every failure becomes one of two
exceptions the pages can show as a sentence instead of a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import requests

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 10.0
# Importing a model downloads and checks the file: give it longer than a read.
SLOW_TIMEOUT = 120.0


class DashboardApiError(Exception):
    """The API answered with an error; `message` is its `error.message`, verbatim."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class ApiUnreachable(Exception):
    """No answer at all: connection refused, timeout, DNS, or not our API."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the API at {url}: {reason}")
        self.url = url
        self.reason = reason


def normalise_base_url(url: str) -> str:
    """Accept `http://host:8000`, `http://host:8000/` and `http://host:8000/api`."""
    base = url.strip().rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    return base


def configured_base_url() -> str:
    """`API_BASE_URL`, else `api_base_url` of config.toml (with its env overrides)."""
    explicit = os.environ.get("API_BASE_URL", "").strip()
    if explicit:
        return normalise_base_url(explicit)
    try:
        from storage.config import load_settings

        return normalise_base_url(load_settings().api_base_url)
    except Exception:
        # A broken config.toml must not hide the dashboard: the page says which URL it tried.
        return DEFAULT_BASE_URL


def token_required() -> bool:
    """Whether each browser session must give the API token (`DASHBOARD_REQUIRE_TOKEN`).

    The dashboard never reads `API_TOKEN` itself: a token in the dashboard's hands
    would let everyone who reaches the dashboard act with it.
    """
    if os.environ.get("DASHBOARD_REQUIRE_TOKEN", "").strip().lower() in {"1", "true", "yes"}:
        return True
    # Started by hand with the service's token in the environment (the old way): that
    # token is not used, but it says the API wants one, so ask for it.
    return bool(os.environ.get("API_TOKEN", "").strip())


def _short_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectionError | requests.ConnectTimeout) and not isinstance(
        exc, requests.ReadTimeout
    ):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.Timeout):
        return "no answer within the timeout"
    return type(exc).__name__


@dataclass(slots=True)
class ApiClient:
    base_url: str
    token: str = ""
    timeout: float = DEFAULT_TIMEOUT
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def from_env(cls) -> ApiClient:
        """A client without a token: the user gives one on the sign-in form."""
        return cls(configured_base_url())

    def with_token(self, token: str) -> ApiClient:
        return ApiClient(self.base_url, token, self.timeout)

    def token_accepted(self) -> bool:
        """Whether the API accepts this client's token (it checks any token presented,
        also on reads that need none); raises ApiUnreachable when there is no answer."""
        try:
            self.get("/api/models")
        except DashboardApiError as exc:
            if exc.status in (401, 403):
                return False
            raise
        return True

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> Any:
        """The decoded JSON answer; raises DashboardApiError or ApiUnreachable.

        `ok_statuses` are error statuses whose body is still the answer (503 of
        /api/health carries the reasons the dashboard wants to show).
        """
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = self.session.request(
                method,
                self.url(path),
                params=clean,
                json=body,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as exc:
            raise ApiUnreachable(self.base_url, _short_reason(exc)) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code < 400 or response.status_code in ok_statuses:
            if payload is None and response.content:
                raise ApiUnreachable(
                    self.base_url, f"{method} {path} answered {response.status_code} without JSON"
                )
            return payload
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and "message" in error:
            raise DashboardApiError(
                response.status_code,
                str(error.get("code", "error")),
                str(error["message"]),
                error.get("details") if isinstance(error.get("details"), dict) else None,
            )
        raise DashboardApiError(
            response.status_code,
            "http_error",
            f"{method} {path} failed with HTTP {response.status_code} {response.reason}",
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        return self.request("POST", path, body=body, timeout=timeout)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # ---- typed helpers for the routes the pages use ----------------------------------

    def health(self) -> dict[str, Any]:
        body = self.request("GET", "/api/health", ok_statuses=(503,))
        return body if isinstance(body, dict) else {}

    def stats(self) -> dict[str, Any]:
        body = self.get("/api/stats")
        return body if isinstance(body, dict) else {}

    def models(self, *, include_inactive: bool = True) -> list[dict[str, Any]]:
        body = self.get("/api/models", include_inactive="true" if include_inactive else None)
        return as_list(body, "models")

    def available_models(self) -> list[dict[str, Any]]:
        return as_list(self.get("/api/models/available"), "models")

    def import_model(self, model_id: int) -> dict[str, Any]:
        body = self.request(
            "POST", "/api/models/import", body={"model_id": model_id}, timeout=SLOW_TIMEOUT
        )
        return body if isinstance(body, dict) else {}

    def timeline(self, hours: int = 24) -> dict[str, Any]:
        """Predictions, alerts, outcomes and delay per time bin (`/api/predictions/timeline`)."""
        body = self.get("/api/predictions/timeline", hours=hours)
        return body if isinstance(body, dict) else {}

    def predictions(self, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        """(total matching the filters, this page of rows)."""
        body = self.get("/api/predictions", **filters)
        rows = as_list(body, "predictions")
        total = body.get("total") if isinstance(body, dict) else None
        return (int(total) if isinstance(total, int) else len(rows)), rows


def as_list(body: Any, key: str) -> list[dict[str, Any]]:
    """A list answer, or the list under `key` (or `items`) of an object answer."""
    if isinstance(body, list):
        return [row for row in body if isinstance(row, dict)]
    if isinstance(body, dict):
        for name in (key, "items", "data"):
            value = body.get(name)
            if isinstance(value, list):
                return [row for row in value if isinstance(row, dict)]
    return []
