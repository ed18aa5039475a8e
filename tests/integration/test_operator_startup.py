"""Start-up and stop as the operator sees them: the real CLI in a subprocess.

A start-up that cannot succeed exits at once with one line naming the setting;
a signal at any moment stops what has started, the embedded PostgreSQL
included; a server left behind by a killed process is found and stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

REPO = Path(__file__).resolve().parents[2]


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_", "STREAMLIT"))}
    env.update({"LOG_LEVEL": "INFO", "LOG_FORMAT": "console", "DB_DSN": ""})
    env.update(overrides)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _assert_one_line_refusal(result: subprocess.CompletedProcess[str], expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert 1 <= len(lines) <= 3, result.stderr
    assert expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_api_port_in_use_refuses_at_once_in_one_line(taken_port: int, tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    result = _cli(
        "serve",
        "--no-dashboard",
        "--no-demo",
        env=_env(API_PORT=str(taken_port), EMBEDDED_DATA_DIR=str(data_dir)),
        timeout=60,
    )
    _assert_one_line_refusal(result, f"API_PORT {taken_port}: address already in use")
    # "At once": refused before the embedded database was even created.
    assert not data_dir.exists()


def test_dashboard_port_in_use_refuses_in_one_line(taken_port: int) -> None:
    result = _cli(
        "serve",
        "--no-demo",
        env=_env(API_PORT=str(free_port()), STREAMLIT_PORT=str(taken_port)),
    )
    _assert_one_line_refusal(result, f"STREAMLIT_PORT {taken_port}: address already in use")


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app@127.0.0.1:{port}/db", "DB_DSN: connection refused at 127.0.0.1:{port}"),
        ("postgresql://app@dbx.invalid/db", 'DB_DSN: host "dbx.invalid" not found'),
        ("app@dbx/db", "DB_DSN: invalid DSN"),
    ],
    ids=["refused", "unknown-host", "invalid"],
)
def test_unusable_db_dsn_refuses_in_one_line_naming_db_dsn(dsn: str, expected: str) -> None:
    port = str(free_port())
    result = _cli(
        "serve",
        "--no-dashboard",
        env=_env(API_PORT=str(free_port()), DB_DSN=dsn.format(port=port)),
    )
    _assert_one_line_refusal(result, expected.format(port=port))


def test_refusal_traceback_only_at_debug_level() -> None:
    result = _cli(
        "serve",
        "--no-dashboard",
        env=_env(API_PORT=str(free_port()), DB_DSN="nonsense", LOG_LEVEL="DEBUG"),
    )
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            'invalid DSN: scheme is expected to be either "postgresql" or "postgres", got \'\''
        )
    )


def _postmaster_running(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_startup_stops_the_embedded_postgres(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "pgdata"
    env = _env(
        API_PORT=str(free_port()),
        API_HOST="127.0.0.1",
        EMBEDDED_DATA_DIR=str(data_dir),
        MODEL_STORAGE_PATH=str(tmp_path / "models"),
        SHUTDOWN_DEADLINE_SECONDS="5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stderr is not None
        # Stop while the service is still starting: migrations and actors follow this line.
        for line in proc.stderr:
            output.append(line)
            if "embedded_postgres_started" in line:
                proc.send_signal(signum)
                break
        _, rest = proc.communicate(timeout=30)
        output.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert proc.returncode == 0, text
    assert "service_ready" not in text
    assert "embedded_postgres_stopped" in text, text
    assert not _postmaster_running(data_dir), "PostgreSQL was left running"


def test_server_left_by_a_killed_process_is_adopted_and_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    # A process that starts the embedded server and dies without stopping it (kill -9).
    orphan = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from storage.db.embedded import EmbeddedPostgres;"
            " EmbeddedPostgres(sys.argv[1]).start(); os.kill(os.getpid(), 9)",
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert orphan.returncode == -signal.SIGKILL
    assert _postmaster_running(data_dir)
    try:
        result = _cli("migrate", env=_env(EMBEDDED_DATA_DIR=str(data_dir)), timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("embedded_postgres_adopted") == 1, result.stderr
        assert "embedded_postgres_stopped" in result.stderr
        assert not _postmaster_running(data_dir), "the adopted server was left running"
    finally:
        if _postmaster_running(data_dir):
            pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGTERM)


def test_config_after_the_command_is_read_and_env_typos_are_warned(
    tmp_path: Path, taken_port: int
) -> None:
    # ./scripts/run passes its arguments after "serve": --config must work there.
    mine = tmp_path / "mine.toml"
    mine.write_text(f"[api]\napi_port = {taken_port}\n")
    result = _cli("serve", "--config", str(mine), "--no-dashboard", env=_env(BATCH_SIZ="5"))
    _assert_one_line_refusal(result, f"API_PORT {taken_port}: address already in use")
    assert "BATCH_SIZ" in result.stderr and "did you mean BATCH_SIZE?" in result.stderr


def test_refusal_is_one_json_line_under_log_format_json(taken_port: int) -> None:
    result = _cli("serve", "--no-dashboard", env=_env(API_PORT=str(taken_port), LOG_FORMAT="json"))
    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    event = json.loads(line)
    assert event["event"] == "startup_refused"
    assert event["message"] == f"cannot start: API_PORT {taken_port}: address already in use"
    assert result.stdout == ""
