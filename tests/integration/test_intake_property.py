"""Intake is total: random collector rows from the column types' full ranges, between
good rows, never keep a good row from being predicted nor the cursor from moving.

One real service on a real PostgreSQL with two real models serves every example:
hypothesis draws rows the coin_metrics columns can store (any text for the mint;
timestamps from 4713 BC to 294276 AD and ±infinity; NaN, ±Infinity, numerics far
beyond double where the column's precision allows them, zero, negatives, NULL;
any int4; duplicates of a good row's (mint, timestamp)) and inserts them in one
statement with good rows of fresh coins. Garbage accumulates from example to
example, as it would in a collector's table.
"""

from __future__ import annotations

import itertools
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from anyio.from_thread import start_blocking_portal
from coin_rows import coin_rows
from conftest import PgCluster
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from intake_cursor import cursor_reached
from ports import free_port
from service_runner import predictors_running, running_service
from test_intake_total import (
    FEATURES,
    as_text,
    column_types,
    insert_raw,
    predicted,
)
from waiting import wait_for
from webhook_receiver import add_trained_models

from actors.app.service import Service
from storage.config import load_settings
from storage.db.pool import connect

Row = dict[str, str | None]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def _timestamps(near: datetime) -> st.SearchStrategy[str]:
    """Every timestamptz PostgreSQL stores, weighted towards the interesting ones."""
    day = st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(0, 86399))

    def dated(era: str, year: int, mdx: tuple[int, int, int]) -> str:
        month, dom, second = mdx
        clock = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        return f"{year:04d}-{month:02d}-{dom:02d} {clock}+00{era}"

    return st.one_of(
        st.sampled_from(["infinity", "-infinity", "epoch", "4713-01-01 00:00:00+00 BC"]),
        st.builds(dated, st.just(" BC"), st.integers(1, 4712), day),
        st.builds(dated, st.just(""), st.integers(1, 294275), day),
        # Around now: the past, and ahead of the clock by up to a day.
        st.integers(-86400, 86400).map(lambda s: (near + timedelta(seconds=s)).isoformat()),
    )


def _numeric(declared: str) -> st.SearchStrategy[str | None]:
    """Values a numeric column of this declared type accepts, as text."""
    special = ["NaN", "0", "-0"]
    limited = re.fullmatch(r"numeric\((\d+),(\d+)\)", declared.replace(" ", ""))
    if limited is None:  # unconstrained numeric: infinities and 1000-digit numbers too
        special += ["Infinity", "-Infinity", "1e1000", "-1e1000", "1e-1000", "1e308", "3.5e38"]
        magnitude = st.floats(allow_nan=False, allow_infinity=False).map(repr)
    else:
        precision, scale = int(limited[1]), int(limited[2])
        bound = 10 ** (precision - scale) - 1
        magnitude = st.decimals(
            min_value=-bound, max_value=bound, places=scale, allow_nan=False
        ).map(str)
    return st.one_of(st.none(), st.sampled_from(special), magnitude)


def _value(declared: str) -> st.SearchStrategy[str | None]:
    if declared == "integer":
        return st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1).map(str))
    if declared == "boolean":
        return st.sampled_from([None, "true", "false"])
    return _numeric(declared)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def plausible_row(near: datetime) -> Row:
    return {k: _text(v) for k, v in coin_rows("template", 1, start=near, seed=1)[0].items()}


def bad_rows(types: dict[str, str], near: datetime) -> st.SearchStrategy[list[Row]]:
    """Rows drawn from the full range of every column, and plausible rows with one to
    three columns drawn so (those reach the models' features far more often). A `mint`
    of None means "a good coin of the example" (so its history holds the row)."""
    columns = {
        name: _value(declared)
        for name, declared in types.items()
        if name not in ("id", "mint", "timestamp")
    }
    mint = st.one_of(st.none(), TEXT.map(lambda t: t[:64]))
    anything = st.fixed_dictionaries({"mint": mint, "timestamp": _timestamps(near), **columns})
    template = plausible_row(near)
    overrides = st.lists(
        st.one_of([st.tuples(st.just(name), values) for name, values in columns.items()]),
        min_size=1,
        max_size=3,
    )
    seconds_ago = st.integers(1, 3600)
    plausible = st.builds(
        lambda m, ago, changes: (
            template
            | {"mint": m, "timestamp": (near - timedelta(seconds=ago)).isoformat()}
            | dict(changes)
        ),
        mint,
        seconds_ago,
        overrides,
    )
    return st.lists(st.one_of(anything, plausible), min_size=1, max_size=6)


async def _example(
    conn: asyncpg.Connection, service: Service, k: int, bad: list[Row], models: int
) -> None:
    """Good ticks of fresh coins around the drawn rows, in one statement; every good tick
    must be predicted by every model and the cursor must reach the last row."""
    now = datetime.now(UTC)
    coins = [f"good{k}_{i}" for i in range(3)]
    good = [as_text(coin_rows(c, 1, start=now, seed=k * 3 + i)[0]) for i, c in enumerate(coins)]
    rows: list[Row] = []
    for i, drawn in enumerate(bad):
        drawn = dict(drawn)
        if drawn["mint"] is None:
            # In a good coin's history: only at or before its tick (a later row would
            # rightly become the coin's tick instead), or at an unusable time.
            drawn["mint"] = coins[i % len(coins)]
            if _usable_after(drawn["timestamp"], now):
                drawn["timestamp"] = (now - timedelta(seconds=i + 1)).isoformat()
        rows.append(drawn)
    statement = [good[0], *rows[: len(rows) // 2], good[1], *rows[len(rows) // 2 :], good[2]]
    ids = await insert_raw(conn, statement)
    ticks = {c: now for c in coins}
    await wait_for(lambda: predicted(conn, ticks, models), timeout=20, what=f"good ticks of {k}")
    await wait_for(lambda: cursor_reached(conn, max(ids)), what="the cursor past the example")


def _usable_after(text: str | None, now: datetime) -> bool:
    """Would this timestamp make a row newer than `now` that intake still uses?"""
    if text is None or text in ("infinity", "-infinity", "epoch") or text.endswith("BC"):
        return False
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return int(text[: text.index("-", 1)]) >= now.year  # beyond Python's years
    return at >= now


def test_random_collector_rows_between_good_rows_never_stop_intake(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    counter = itertools.count()
    with start_blocking_portal() as portal:
        database = portal.call(pg_cluster.create_database)
        dsn = pg_cluster.dsn(database)
        settings = load_settings(env={}).replace(
            db_dsn=dsn,
            api_host="127.0.0.1",
            api_port=free_port(),
            model_storage_path=str(tmp_path / "models"),
            polling_interval_seconds=0.2,
            batch_timeout_seconds=0.01,
            shutdown_deadline_seconds=5.0,
            log_level="WARNING",
        )
        conn: asyncpg.Connection = portal.call(connect, dsn)
        try:
            models = portal.call(add_trained_models, conn, tmp_path, 1201, FEATURES)
            types = portal.call(column_types, conn)
            with portal.wrap_async_context_manager(running_service(settings)) as service:

                async def ready() -> Any:
                    return await wait_for(
                        lambda: predictors_running(service) == len(models), what="models"
                    )

                portal.call(ready)

                near = datetime.now(UTC)
                ten_seconds_ago = (near - timedelta(seconds=10)).isoformat()

                # No shrinking: the examples share one service and database on purpose
                # (garbage accumulates), so a smaller replay would not be the same case.
                @hypothesis_settings(
                    max_examples=12,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                )
                # Cases found before (kept whatever the generator draws): a row before
                # Christ and one at -infinity in a good coin's history; a coin whose
                # volume is a finite double beyond float32 in the good coins' batch.
                @example(bad=[{"mint": None, "timestamp": "4713-01-01 00:00:00+00 BC"}])
                @example(bad=[{"mint": None, "timestamp": "-infinity", "price_close": "1"}])
                @example(
                    bad=[
                        plausible_row(near)
                        | {"mint": "huge", "timestamp": ten_seconds_ago, "volume_sol": "1e300"}
                    ]
                )
                # A high far below the close: the ATH distance overflows (a NaN/inf the
                # features map to 0, and once a RuntimeWarning in the log).
                @example(
                    bad=[
                        plausible_row(near)
                        | {
                            "mint": "tiny_high",
                            "timestamp": ten_seconds_ago,
                            "price_high": "1e-310",
                            "price_close": "1e300",
                        }
                    ]
                )
                @given(bad=bad_rows(types, near))
                def one_example(bad: list[Row]) -> None:
                    portal.call(_example, conn, service, next(counter), bad, len(models))

                # The service runs in the portal's thread: warnings are process-wide.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    one_example()
                restarts = dict(service.state.actor_restarts)
        finally:
            portal.call(conn.close)
            portal.call(pg_cluster.drop_database, database)
    assert restarts == {}, "an actor crashed over a collector row"
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
    assert next(counter) >= 12
