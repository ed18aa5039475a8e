"""Retention settings: a retention too short to be safe stops start-up, naming the key."""

from __future__ import annotations

import pytest

from storage.config import ConfigError, load_settings, retention_minimum_seconds


def test_defaults_keep_deliveries_six_hours_and_dead_jobs_a_week() -> None:
    settings = load_settings(env={})
    assert settings.webhook_retention_seconds == 21600
    assert settings.webhook_dead_retention_seconds == 7 * 86400
    assert settings.retention_interval_seconds == 300.0
    assert settings.retention_chunk_rows == 5000
    # Both horizons default to an hour: the minimum is two.
    assert retention_minimum_seconds(settings) == 7200


def test_a_retention_shorter_than_the_re_read_horizon_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env={"WEBHOOK_RETENTION_SECONDS": "3600"})
    message = str(refused.value)
    assert message.startswith("WEBHOOK_RETENTION_SECONDS:")
    assert "at least 7200 s" in message
    assert "CATCHUP_MAX_AGE_SECONDS" in message
    assert "(got 3600)" in message


def test_the_minimum_follows_the_longest_horizon() -> None:
    env = {"CATCHUP_MAX_AGE_SECONDS": "86400", "WEBHOOK_RETENTION_SECONDS": "86400"}
    with pytest.raises(ConfigError, match=r"WEBHOOK_RETENTION_SECONDS: .*at least 90000 s"):
        load_settings(env=env)
    env["WEBHOOK_RETENTION_SECONDS"] = "90000"
    assert load_settings(env=env).webhook_retention_seconds == 90000
    with pytest.raises(ConfigError, match=r"WEBHOOK_RETENTION_SECONDS: .*at least 18000 s"):
        load_settings(env={"WEBHOOK_MAX_AGE_SECONDS": "14400", "WEBHOOK_RETENTION_SECONDS": "9000"})


def test_zero_keeps_every_job_and_replace_validates_too() -> None:
    settings = load_settings(
        env={"WEBHOOK_RETENTION_SECONDS": "0", "WEBHOOK_DEAD_RETENTION_SECONDS": "0"}
    )
    assert settings.webhook_retention_seconds == 0
    # Raising a horizon later (tests, tools) is checked against the retention as well.
    assert settings.replace(catchup_max_age_seconds=30 * 86400).catchup_max_age_seconds
    with pytest.raises(ConfigError, match="WEBHOOK_RETENTION_SECONDS"):
        load_settings(env={}).replace(catchup_max_age_seconds=30 * 86400)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RETENTION_INTERVAL_SECONDS", "0"),
        ("RETENTION_CHUNK_ROWS", "0"),
        ("WEBHOOK_RETENTION_SECONDS", "-1"),
    ],
)
def test_bad_interval_chunk_or_negative_retention_name_their_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_settings(env={key: value})


def test_predictions_are_kept_by_default_and_a_short_retention_is_refused() -> None:
    assert load_settings(env={}).prediction_retention_seconds == 0
    with pytest.raises(ConfigError, match=r"^PREDICTION_RETENTION_SECONDS: .*at least 7200 s"):
        load_settings(env={"PREDICTION_RETENTION_SECONDS": "3600"})
    week = load_settings(env={"PREDICTION_RETENTION_SECONDS": str(7 * 86400)})
    assert week.prediction_retention_seconds == 7 * 86400


def test_a_short_dead_job_retention_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOK_DEAD_RETENTION_SECONDS: .*at least 7200 s"):
        load_settings(env={"WEBHOOK_DEAD_RETENTION_SECONDS": "3600"})
    # Raising the catch-up horizon past a week asks for a longer dead-job retention too.
    with pytest.raises(ConfigError, match="WEBHOOK_DEAD_RETENTION_SECONDS"):
        load_settings(
            env={
                "CATCHUP_MAX_AGE_SECONDS": str(8 * 86400),
                "WEBHOOK_RETENTION_SECONDS": str(9 * 86400),
            }
        )
