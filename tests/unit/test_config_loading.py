"""Config files of any size, messages in environment names, typos named."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.config import ConfigError, environment_warnings, load_settings


def test_a_partial_config_file_takes_the_rest_from_the_shipped_defaults(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text("[anything]\nbatch_size = 7\nlog_format = 'json'\n")
    settings = load_settings(mine, env={})
    defaults = load_settings(env={})
    assert (settings.batch_size, settings.log_format) == (7, "json")
    assert settings.replace(batch_size=defaults.batch_size, log_format="console") == defaults
    # The environment still wins over the file.
    assert load_settings(mine, env={"BATCH_SIZE": "9"}).batch_size == 9
    # PUMP_PREDICTOR_CONFIG names the same kind of file.
    assert load_settings(env={"PUMP_PREDICTOR_CONFIG": str(mine)}).batch_size == 7


def test_an_unknown_key_in_a_config_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text("[intake]\nbatch_siz = 7\n")
    with pytest.raises(ConfigError, match=r"intake\.batch_siz: unknown .*did you mean batch_size"):
        load_settings(mine, env={})


def test_messages_name_the_environment_variable_and_bools_list_accepted_values(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"^BATCH_SIZE: must be at least 1"):
        load_settings(env={"BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match=r"^WEBHOOK_BATCH_MAX_TICKS: must be at least 1"):
        load_settings(env={"WEBHOOK_BATCH_MAX_TICKS": "0"})
    with pytest.raises(ConfigError, match=r"^WEBHOOK_BATCH_MAX_TICKS: must be at most 1000"):
        load_settings(env={"WEBHOOK_BATCH_MAX_TICKS": "5000"})
    with pytest.raises(ConfigError, match=r"^API_PUBLIC_READS: .*'maybe'.*1/0, true/false"):
        load_settings(env={"API_PUBLIC_READS": "maybe"})
    mine = tmp_path / "mine.toml"
    mine.write_text("[intake]\nbatch_size = 'many'\n")
    with pytest.raises(ConfigError, match=r"^BATCH_SIZE: .*mine.toml \[intake\] batch_size"):
        load_settings(mine, env={})


def test_environment_typos_and_prefixed_names_are_warned_about() -> None:
    warnings = environment_warnings(
        {
            "BATCH_SIZ": "5",
            "PUMP_PREDICTOR_BATCH_SIZE": "5",
            "BATCH_SIZE": "5",
            "PATH": "/bin",
            "API_KEY": "x",
            "PUMP_PREDICTOR_CONFIG": "x.toml",
        }
    )
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("BATCH_SIZ: ") and "did you mean BATCH_SIZE?" in warnings[0]
    assert warnings[1].startswith("PUMP_PREDICTOR_BATCH_SIZE: ") and "BATCH_SIZE" in warnings[1]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "0.0.0.0"])
def test_the_training_service_url_may_not_point_at_this_service(host: str) -> None:
    defaults = load_settings(env={})
    assert ":8000" not in defaults.training_service_api_url
    with pytest.raises(ConfigError, match=r"^TRAINING_SERVICE_API_URL: points at this service"):
        load_settings(env={"TRAINING_SERVICE_API_URL": f"http://{host}:8000/api"})
    with pytest.raises(ConfigError, match="API_PORT 9100"):
        load_settings(
            env={"API_PORT": "9100", "TRAINING_SERVICE_API_URL": f"http://{host}:9100/api"}
        )
