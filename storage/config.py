"""Typed settings: `config.toml` defaults, overridden by environment variables.

Loaded once at start-up. Every failure names the key, because a service that
starts with a silently ignored typo is worse than one that refuses to start.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage.errors import StorageError
from storage.masking import MASK, is_secret_key, mask_dsn, mask_url

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.toml"
CONFIG_ENV = "PUMP_PREDICTOR_CONFIG"

# Slack on top of the longest re-read horizon before a delivered or dead webhook job
# may be deleted: collector clocks, ids committing out of order, a slow restart.
RETENTION_MARGIN_SECONDS = 3600


class ConfigError(StorageError, ValueError):
    """A configuration key is unknown, missing or has a bad value."""

    code = "invalid_config"


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
    shard_count: int
    shard_lease_seconds: float
    workers: int
    n8n_webhook_url: str
    n8n_webhook_timeout: float
    webhook_concurrency: int
    webhook_per_host_limit: int
    webhook_max_age_seconds: int
    webhook_max_attempts: int
    webhook_not_found_grace_seconds: float
    webhook_allowed_networks: str
    n8n_payload: str
    webhook_batch_max_ticks: int
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


BOOL_VALUES = "1/0, true/false, yes/no, on/off"


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
            accepted = f" (accepted: {BOOL_VALUES})" if kind is bool else ""
            raise ConfigError(
                f"{key}: {source} value {raw!r} is not a valid {kind.__name__}{accepted}"
            ) from None
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, bool):
        raise ConfigError(f"{key}: {source} value {raw!r} is not a valid int")
    if not isinstance(raw, kind):
        accepted = " (accepted: true, false)" if kind is bool else ""
        raise ConfigError(f"{key}: {source} value {raw!r} is not a valid {kind.__name__}{accepted}")
    return raw


def _validate(s: Settings) -> None:
    def need(cond: bool, key: str, what: str) -> None:
        # Named as operators set it: the environment variable (the TOML key is its lower case).
        if not cond:
            raise ConfigError(f"{key.upper()}: {what} (got {getattr(s, key)!r})")

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
        "webhook_batch_max_ticks",
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
        "shard_lease_seconds",
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
            f"must be 0 (keep {rows}) or at least {minimum} s: CATCHUP_MAX_AGE_SECONDS"
            f" ({s.catchup_max_age_seconds}) or WEBHOOK_MAX_AGE_SECONDS"
            f" ({s.webhook_max_age_seconds}), whichever is longer, plus"
            f" {RETENTION_MARGIN_SECONDS} s; {resent} queued and sent again when its tick is"
            " re-read",
        )
    need(1 <= s.shard_count <= 4096, "shard_count", "must be 1-4096")
    need(0 <= s.workers <= 64, "workers", "must be 0 (one per core) to 64")
    need(
        s.db_pool_max_size >= s.db_pool_min_size, "db_pool_max_size", "must be >= DB_POOL_MIN_SIZE"
    )
    need(s.n8n_payload in {"full", "compact"}, "n8n_payload", "must be 'full' or 'compact'")
    # A batch is one POST body (a few kB per tick) and one answer for all its ticks.
    need(s.webhook_batch_max_ticks <= 1000, "webhook_batch_max_ticks", "must be at most 1000")
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
    need(
        not _points_at_own_api(s.training_service_api_url, s.api_host, s.api_port),
        "training_service_api_url",
        f"points at this service's own API (API_PORT {s.api_port}), not at the Training"
        " Service: set it to the Training Service's URL",
    )
    for url_key in ("training_service_api_url", "api_base_url", "n8n_webhook_url"):
        url = getattr(s, url_key)
        if url:
            need(
                urlsplit(url).scheme in {"http", "https"} and bool(urlsplit(url).netloc),
                url_key,
                "must be an http(s) URL",
            )


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def _points_at_own_api(url: str, api_host: str, api_port: int) -> bool:
    """Would calling `url` reach this very service (same host, same port)?"""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    return port == api_port and (host in _LOCAL_HOSTS or host == api_host.lower())


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


def _read_toml(config_path: Path, types: dict[str, type]) -> dict[str, Any]:
    """The keys of one config file (sections are for humans; keys are flat)."""
    try:
        with config_path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{CONFIG_ENV}: config file {config_path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a [section] of keys in {config_path}")
        for key, raw in table.items():
            if key not in types:
                hint = _closest(key, types)
                raise ConfigError(
                    f"{section}.{key}: unknown configuration key in {config_path}"
                    + (f" (did you mean {hint}?)" if hint else "")
                )
            if key in values:
                raise ConfigError(f"{section}.{key}: key defined twice in {config_path}")
            values[key] = _coerce(key.upper(), raw, types[key], f"{config_path} [{section}] {key}")
    return values


def _closest(name: str, known: Mapping[str, Any]) -> str | None:
    matches = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.85)
    return matches[0] if matches else None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """The shipped `config.toml`, then a config file (any subset of keys: `--config` or
    PUMP_PREDICTOR_CONFIG), then the environment (each key's upper-case name)."""
    env = os.environ if env is None else env
    types = _field_types()
    values = _read_toml(DEFAULT_CONFIG_PATH, types)
    missing = sorted(set(types) - set(values))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: missing from {DEFAULT_CONFIG_PATH}")
    override = path or env.get(CONFIG_ENV)
    if override and Path(override).resolve() != DEFAULT_CONFIG_PATH:
        values.update(_read_toml(Path(override), types))
    for key, kind in types.items():
        env_name = key.upper()
        if env_name in env:
            values[key] = _coerce(env_name, env[env_name], kind, "environment")
    settings = Settings(**values)
    _validate(settings)
    return settings


# Environment variables that look like ours but are not read: a prefix of ours, or a
# first word shared with a setting (BATCH_SIZ, API_TOKN) that is close to a real name.
ENV_PREFIX = "PUMP_PREDICTOR_"
_KNOWN_EXTRA_ENV = frozenset({CONFIG_ENV, "TEST_DATABASE_URL"})


def environment_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """Names in the environment that are probably meant for this service but ignored."""
    env = os.environ if env is None else env
    known = {key.upper(): key for key in _field_types()}
    first_words = {name.split("_", 1)[0] for name in known}
    warnings: list[str] = []
    for name in sorted(env):
        if name in known or name in _KNOWN_EXTRA_ENV:
            continue
        if name.startswith(ENV_PREFIX):
            bare = name[len(ENV_PREFIX) :]
            hint = bare if bare in known else _closest_env(bare, known)
            warnings.append(
                f"{name}: not a setting of this service, ignored"
                + (f" (settings have no prefix: did you mean {hint}?)" if hint else "")
            )
        elif name.split("_", 1)[0] in first_words:
            hint = _closest_env(name, known)
            if hint:
                warnings.append(
                    f"{name}: not a setting of this service, ignored (did you mean {hint}?)"
                )
    return warnings


def _closest_env(name: str, known: Mapping[str, str]) -> str | None:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.85)
    return matches[0] if matches else None
