"""Replay of recorded coin_metrics rows into a real PostgreSQL.

tests/fixtures/replay_sample.csv was made by the demo market:
    generate_history(4, 2, seed=7).write_csv("tests/fixtures/replay_sample.csv")
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
import polars as pl
import pytest

from scripts.replay import ReplayError, read_recording, replay

FIXTURES = Path(__file__).parent.parent / "fixtures"
SAMPLE = FIXTURES / "replay_sample.csv"
GOLDEN = FIXTURES / "features" / "coin_metrics.csv"
REPO = Path(__file__).parent.parent.parent


def _recorded(path: Path) -> pl.DataFrame:
    return pl.read_csv(path).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC").dt.cast_time_unit("us")
    )


async def _stored(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM coin_metrics ORDER BY id")


def _assert_per_coin_order(rows: list[asyncpg.Record]) -> None:
    """Within each coin, insertion (id) order is timestamp order."""
    last: dict[str, datetime] = {}
    for row in rows:
        previous = last.get(row["mint"])
        assert previous is None or row["timestamp"] >= previous, row["mint"]
        last[row["mint"]] = row["timestamp"]


async def test_replay_of_the_golden_recording_inserts_every_row_once_in_coin_order(
    pool: asyncpg.Pool,
) -> None:
    recorded = _recorded(GOLDEN)

    result = await replay(pool, GOLDEN, math.inf, progress=False)

    rows = await _stored(pool)
    assert result.rows == len(rows) == recorded.height
    assert result.coins == recorded["mint"].n_unique()
    keys = Counter((r["mint"], r["timestamp"]) for r in rows)
    assert keys == Counter(zip(recorded["mint"], recorded["timestamp"], strict=True))
    _assert_per_coin_order(rows)
    # Values arrive intact (numeric columns, booleans, integers).
    by_key = {(r["mint"], r["timestamp"]): r for r in rows}
    for expected in recorded.head(20).iter_rows(named=True):
        got = by_key[(expected["mint"], expected["timestamp"])]
        assert got["price_close"] == pytest.approx(expected["price_close"], rel=1e-12)
        assert got["is_koth"] == expected["is_koth"]
        assert got["num_buys"] == expected["num_buys"]
        assert got["phase_id_at_time"] == expected["phase_id_at_time"]


async def test_replay_paces_rows_by_their_recorded_gaps_scaled_by_speed(
    pool: asyncpg.Pool,
) -> None:
    recorded = _recorded(SAMPLE)
    span = (recorded["timestamp"].max() - recorded["timestamp"].min()).total_seconds()
    speed = span / 0.6  # the whole recording in about 0.6 s

    result = await replay(pool, SAMPLE, speed, progress=False)

    # Not faster than the recording allows at this speed (sleeping can only add time).
    assert result.seconds >= 0.6 * 0.95
    assert result.seconds < 0.6 + 10
    rows = await _stored(pool)
    assert len(rows) == recorded.height == result.rows
    _assert_per_coin_order(rows)
    # Recorded timestamps are written as they were.
    assert result.shifted_by == timedelta(0)
    assert min(r["timestamp"] for r in rows) == recorded["timestamp"].min()


async def test_replay_with_shift_to_now_moves_every_row_by_one_offset(
    pool: asyncpg.Pool,
) -> None:
    recorded = _recorded(SAMPLE).sort("timestamp")
    before = datetime.now(UTC)

    result = await replay(pool, SAMPLE, 0, shift_to_now=True, progress=False)

    rows = await _stored(pool)
    first = min(r["timestamp"] for r in rows)
    assert before <= first <= datetime.now(UTC)
    assert result.shifted_by == first - recorded["timestamp"][0]
    shifted = Counter((r["mint"], r["timestamp"] - result.shifted_by) for r in rows)
    assert shifted == Counter(zip(recorded["mint"], recorded["timestamp"], strict=True))


async def test_replay_reads_parquet_and_reports_progress(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    parquet = tmp_path / "day.parquet"
    read_recording(SAMPLE).write_parquet(parquet)
    stream = io.StringIO()

    result = await replay(pool, parquet, 0, stream=stream)

    assert result.rows == await pool.fetchval("SELECT count(*) FROM coin_metrics") > 0
    last_line = stream.getvalue().strip().splitlines()[-1]
    assert f"{result.rows}/{result.rows} rows (100%)" in last_line
    assert f"{result.coins} coins" in last_line
    assert "rows/s" in last_line and "ETA" in last_line


async def test_replay_refuses_a_recording_without_required_columns(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.csv"
    read_recording(SAMPLE).drop("price_close", "mint").write_csv(broken)

    with pytest.raises(ReplayError) as error:
        await replay(pool, broken, 0, progress=False)

    assert "price_close" in str(error.value) and "mint" in str(error.value)
    assert "price_open" not in str(error.value).split("(required")[0]
    assert await pool.fetchval("SELECT count(*) FROM coin_metrics") == 0


async def test_replay_names_a_missing_file_and_an_unknown_format(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    with pytest.raises(ReplayError, match="no such file"):
        await replay(pool, tmp_path / "nope.csv", 0, progress=False)
    text = tmp_path / "day.json"
    text.write_text("{}")
    with pytest.raises(ReplayError, match=r"unknown format '\.json'"):
        await replay(pool, text, 0, progress=False)


async def test_replay_writes_missing_optional_columns_as_null(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    slim = tmp_path / "slim.csv"
    read_recording(SAMPLE).drop("dev_sold_amount", "is_koth").write_csv(slim)

    await replay(pool, slim, 0, progress=False)

    rows = await _stored(pool)
    assert rows and all(r["dev_sold_amount"] is None and r["is_koth"] is None for r in rows)
    assert all(r["price_close"] is not None for r in rows)


async def test_replay_command_line_writes_into_the_configured_database(
    pool: asyncpg.Pool, db_dsn: str
) -> None:
    command = [str(Path(sys.executable).parent / "pump-predictor"), "replay", str(SAMPLE)]
    env = {**os.environ, "DB_DSN": db_dsn, "LOG_LEVEL": "WARNING"}

    done = await anyio.run_process([*command, "--speed", "inf"], env=env, cwd="/", check=False)

    assert done.returncode == 0, done.stderr.decode()
    expected = read_recording(SAMPLE)
    assert f"replayed {expected.height} rows" in done.stdout.decode()
    assert "100%" in done.stderr.decode()
    assert await pool.fetchval("SELECT count(*) FROM coin_metrics") == expected.height

    missing = await anyio.run_process(
        [*command[:2], str(REPO / "pyproject.toml")], env=env, cwd="/", check=False
    )
    assert missing.returncode == 2
    assert "unknown format" in missing.stderr.decode()
