"""Typed settings: `config.toml` defaults, overridden by environment variables.

Loaded once at start-up. Every failure names the key, because a service that
starts with a silently ignored typo is worse than one that refuses to start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage.masking import MASK, is_secret_key, mask_dsn, mask_url

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.toml"
CONFIG_ENV = "PUMP_PREDICTOR_CONFIG"

# Slack on top of the longest re-read horizon before a delivered or dead webhook job
# may be deleted: collector clocks, ids committing out of order, a slow restart.
RETENTION_MARGIN_SECONDS = 3600


class ConfigError(ValueError):
    """A configuration key is unknown, missing or has a bad value."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    db_dsn: str
    embedded_data_dir: str
    db_pool_min_size: int
    db_pool_max_size: int
    api_host: str
    api_port: int
    api_token: str
    api_public_reads: bool
    api_auth_failure_delay_seconds: float
    api_auth_max_failures: int
    api_auth_failure_window_seconds: float
    training_service_api_url: str
    training_service_timeout_seconds: float
    model_storage_path: str
    model_max_bytes: int
    model_probe_memory_bytes: int
    model_probe_timeout_seconds: float
    batch_size: int
    batch_timeout_seconds: float
    polling_interval_seconds: float
    feature_history_size: int
    catchup_max_age_seconds: int
    intake_max_future_seconds: float
    cursor_overlap_rows: int
    poll_page_size: int
    listener_probe_interval_seconds: float
    listener_probe_timeout_seconds: float
    n8n_webhook_url: str
    n8n_webhook_timeout: float
    webhook_concurrency: int
    webhook_per_host_limit: int
    webhook_max_age_seconds: int
    webhook_max_attempts: int
    webhook_not_found_grace_seconds: float
    webhook_allowed_networks: str
    n8n_payload: str
    webhook_retention_seconds: int
    webhook_dead_retention_seconds: int
    prediction_retention_seconds: int
    retention_interval_seconds: float
    retention_chunk_rows: int
    evaluation_grace_seconds: int
    evaluation_interval_seconds: float
    evaluation_page_size: int
    health_max_lag_seconds: float
    health_actor_grace_seconds: float
    health_max_failed_evaluations: int
    log_level: str
    log_format: str
    shutdown_deadline_seconds: float
    streamlit_host: str
    streamlit_port: int
    api_base_url: str

    @property
    def embedded(self) -> bool:
        """No DSN configured: run on the embedded PostgreSQL."""
        return not self.db_dsn

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed, validated like a loaded config."""
        new = dataclasses.replace(self, **changes)
        _validate(new)
        return new

    def public_view(self) -> dict[str, Any]:
        """Every setting with secrets removed: secret keys hidden, URL and DSN secrets masked."""
        view: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if is_secret_key(field.name):
                value = MASK if value else ""
            elif field.name == "db_dsn":
                value = mask_dsn(value)
            elif field.name.endswith("_url"):
                value = mask_url(value)
            view[field.name] = value
        return view


def redact_url(url: str) -> str:
    """Mask the password, secret query values and secret path segments of a URL or DSN."""
    return mask_dsn(url) if url else url


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _coerce(key: str, raw: Any, kind: type, source: str) -> Any:
    """Turn a TOML or environment value into the field's type, or say what is wrong."""
    if isinstance(raw, str) and kind is not str:
        text = raw.strip()
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered in {"1", "true", "yes", "on"}:
                    return True
                if lowered in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            return kind(text)
        except ValueError:
            raise ConfigError(
                f"{key}: {source} value {raw!r} is not a valid {kind.__name__}"
            ) from None
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, bool):
        raise ConfigError(f"{key}: {source} value {raw!r} is not a valid int")
    if not isinstance(raw, kind):
        raise ConfigError(f"{key}: {source} value {raw!r} is not a valid {kind.__name__}")
    return raw


def _validate(s: Settings) -> None:
    def need(cond: bool, key: str, what: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {what} (got {getattr(s, key)!r})")

    for port_key in ("api_port", "streamlit_port"):
        need(1 <= getattr(s, port_key) <= 65535, port_key, "must be a port 1-65535")
    for positive in (
        "db_pool_min_size",
        "db_pool_max_size",
        "batch_size",
        "feature_history_size",
        "poll_page_size",
        "webhook_concurrency",
        "webhook_per_host_limit",
        "webhook_max_attempts",
        "evaluation_page_size",
        "retention_chunk_rows",
        "model_max_bytes",
        "health_max_failed_evaluations",
    ):
        need(getattr(s, positive) >= 1, positive, "must be at least 1")
    for seconds in (
        "training_service_timeout_seconds",
        "batch_timeout_seconds",
        "polling_interval_seconds",
        "listener_probe_interval_seconds",
        "listener_probe_timeout_seconds",
        "n8n_webhook_timeout",
        "evaluation_interval_seconds",
        "health_max_lag_seconds",
        "health_actor_grace_seconds",
        "shutdown_deadline_seconds",
        "retention_interval_seconds",
        "api_auth_failure_window_seconds",
    ):
        need(getattr(s, seconds) > 0, seconds, "must be greater than 0")
    for non_negative in (
        "api_auth_failure_delay_seconds",
        "api_auth_max_failures",
        "catchup_max_age_seconds",
        "intake_max_future_seconds",
        "cursor_overlap_rows",
        "webhook_max_age_seconds",
        "evaluation_grace_seconds",
        "webhook_not_found_grace_seconds",
    ):
        need(getattr(s, non_negative) >= 0, non_negative, "must not be negative")
    minimum = retention_minimum_seconds(s)
    for key, rows, resent in (
        ("webhook_retention_seconds", "every delivered job", "a delivered job deleted sooner is"),
        ("webhook_dead_retention_seconds", "every dead job", "a dead job deleted sooner is"),
        (
            "prediction_retention_seconds",
            "every prediction",
            "a prediction deleted sooner is made,",
        ),
    ):
        period = getattr(s, key)
        need(
            period == 0 or period >= minimum,
            key,
            f"must be 0 (keep {rows}) or at least {minimum} s: catchup_max_age_seconds"
            f" ({s.catchup_max_age_seconds}) or webhook_max_age_seconds"
            f" ({s.webhook_max_age_seconds}), whichever is longer, plus"
            f" {RETENTION_MARGIN_SECONDS} s; {resent} queued and sent again when its tick is"
            " re-read",
        )
    need(
        s.db_pool_max_size >= s.db_pool_min_size, "db_pool_max_size", "must be >= db_pool_min_size"
    )
    need(s.n8n_payload in {"full", "compact"}, "n8n_payload", "must be 'full' or 'compact'")
    need(s.log_format in {"json", "console"}, "log_format", "must be 'json' or 'console'")
    need(
        s.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"},
        "log_level",
        "must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
    )
    for entry in s.webhook_allowed_networks.split(","):
        try:
            if entry.strip():
                ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            need(False, "webhook_allowed_networks", f"{entry.strip()!r} is not a CIDR network")
    for url_key in ("training_service_api_url", "api_base_url", "n8n_webhook_url"):
        url = getattr(s, url_key)
        if url:
            need(
                urlsplit(url).scheme in {"http", "https"} and bool(urlsplit(url).netloc),
                url_key,
                "must be an http(s) URL",
            )


def retention_minimum_seconds(s: Settings) -> int:
    """The shortest retention period (webhook jobs, dead jobs, predictions) that is safe.

    A job's idempotency key is what keeps a re-read tick from being queued and sent
    twice, so a delivered job must outlive every way its tick can be read again: a
    restart re-reads `cursor_overlap_rows` behind the cursor, but never rows older
    than `catchup_max_age_seconds`. Dead jobs are kept at least as long as a job
    may stay pending (`webhook_max_age_seconds`), so the dead list covers a whole
    delivery life.
    """
    return max(s.catchup_max_age_seconds, s.webhook_max_age_seconds) + RETENTION_MARGIN_SECONDS


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read `config.toml` (sections are for humans; keys are flat) and the environment."""
    env = os.environ if env is None else env
    config_path = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        with config_path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{CONFIG_ENV}: config file {config_path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: invalid TOML: {exc}") from None

    types = _field_types()
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a [section] of keys in {config_path}")
        for key, raw in table.items():
            if key not in types:
                raise ConfigError(f"{section}.{key}: unknown configuration key")
            if key in values:
                raise ConfigError(f"{section}.{key}: key defined twice")
            values[key] = _coerce(key, raw, types[key], str(config_path))
    missing = sorted(set(types) - set(values))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: missing from {config_path}")
    for key, kind in types.items():
        env_name = key.upper()
        if env_name in env:
            values[key] = _coerce(env_name, env[env_name], kind, "environment")
    settings = Settings(**values)
    _validate(settings)
    return settings
