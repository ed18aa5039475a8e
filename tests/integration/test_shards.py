"""Coin shards leased through PostgreSQL: fair shares, fencing, hand-over without loss.

Real PostgreSQL, real services (in-process here; tests/integration/test_replicas.py
runs them as processes and kills one), real models, a real webhook receiver: a coin
tick counts as predicted when its POST arrived, and must arrive exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest
from coin_rows import coin_rows, insert_rows
from ports import free_port
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import WebhookReceiver, add_trained_models

from actors.app.service import Service
from actors.shards.shard_set import ShardSet
from storage.config import Settings
from storage.db.pool import connect
from storage.intake import shard_leases
from storage.refusals import find_refusal

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


def posted(receiver: WebhookReceiver) -> Counter[tuple[str, str]]:
    """(coin, tick time) -> POSTs received for it."""
    return Counter((b["coin_id"], b["timestamp"]) for b in receiver.bodies())


def arrived(
    receiver: WebhookReceiver, ticks: set[tuple[str, str]]
) -> Callable[[], Awaitable[bool]]:
    """A probe: every one of `ticks` has been POSTed."""

    async def probe() -> bool:
        return ticks <= set(posted(receiver))

    return probe


def ticks_of(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The newest tick of each coin in `rows`, as its webhook names it."""
    newest: dict[str, datetime] = {}
    for r in rows:
        newest[r["mint"]] = max(newest.get(r["mint"], r["timestamp"]), r["timestamp"])
    return {(coin, at.isoformat()) for coin, at in newest.items()}


async def shards_by_holder(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch(
        "SELECT holder FROM shard_leases WHERE holder IS NOT NULL AND expires_at > now()"
    )
    return Counter(r["holder"] for r in rows)


async def get_json(service: Service, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{service.web_port}{path}") as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def test_sql_and_python_put_every_coin_in_the_same_shard(pool: asyncpg.Pool) -> None:
    mints = [f"{i:04d}pump{i * 7919 % 1000}" for i in range(300)] + ["", "ÄÖü€"]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT m, pp_shard_of(m, 64) AS s, pp_shard_of(NULL, 7) AS n"
            " FROM unnest($1::text[]) AS m",
            mints,
        )
    assert {r["m"]: r["s"] for r in rows} == {m: shard_leases.shard_of(m, 64) for m in mints}
    assert rows[0]["n"] == shard_leases.shard_of(None, 7)
    assert len({r["s"] for r in rows}) > 50  # spread over (almost) every shard


async def test_a_holder_that_lost_its_lease_commits_nothing_of_that_shard(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await shard_leases.configure(conn, 8)
        mine = ShardSet(8, holder="paused-holder")
        mine.set_held((await shard_leases.claim(conn, mine.holder, 8, 10.0)).generations)
        assert len(mine.held) == 8
        coins = [f"coin{i}" for i in range(40)]
        lost = mine.shard_of(coins[0])
        # Paused past its expiry: another holder took the shard over (a new generation).
        await conn.execute(
            "UPDATE shard_leases SET holder = 'other', generation = generation + 1"
            " WHERE shard = $1",
            lost,
        )
        async with conn.transaction():
            kept = await mine.fence_coins(conn, coins)
        assert kept == {c for c in coins if mine.shard_of(c) != lost}
        moved = await shard_leases.advance_cursors(conn, mine.holder, mine.held, 500, None)
        cursors = await shard_leases.load_cursors(conn, range(8))
    assert moved == 7
    assert cursors[lost] == 0, "the lost shard's cursor moved"
    assert all(c == 500 for s, c in cursors.items() if s != lost)


async def test_a_takeover_waits_for_the_commit_that_holds_the_fence(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, pool.acquire() as other:
        await shard_leases.configure(conn, 4)
        mine = ShardSet(4, holder="a")
        mine.set_held((await shard_leases.claim(conn, "a", 4, 10.0)).generations)
        await conn.execute("UPDATE shard_leases SET expires_at = now() - interval '1 s'")
        async with conn.transaction():
            kept = await mine.fence_coins(conn, ["x", "y", "z"])
            assert kept == {"x", "y", "z"}  # expired, but nobody took them: still ours
            taken = (await shard_leases.claim(other, "b", 4, 10.0)).generations
            held_by_fence = {mine.shard_of(c) for c in kept}
            assert not held_by_fence & set(taken), "a fenced shard was taken mid-commit"
        taken |= (await shard_leases.claim(other, "b", 4, 10.0)).generations
    assert set(taken) == {0, 1, 2, 3}


async def test_a_heartbeat_does_not_wait_for_a_storing_transaction(pool: asyncpg.Pool) -> None:
    """The fence locks its lease rows against a takeover only: the heartbeat extends them
    while a batch is being stored (else every lease of the holder waits for that commit,
    and the next batch's fence waits behind the heartbeat)."""
    async with pool.acquire() as conn, pool.acquire() as beating:
        await shard_leases.configure(conn, 4)
        mine = ShardSet(4, holder="a")
        mine.set_held((await shard_leases.claim(conn, "a", 4, 10.0)).generations)
        await beating.execute("SET lock_timeout = '5s'")  # a wait fails the test
        async with conn.transaction():
            assert await mine.fence_coins(conn, ["x", "y", "z"]) == {"x", "y", "z"}
            beat = await shard_leases.heartbeat(beating, "a", "host", 1, 60.0)
            assert beat.held == mine.held
        await beating.execute("RESET lock_timeout")
        extended = await conn.fetchval(
            "SELECT bool_and(expires_at > now() + interval '30 s') FROM shard_leases"
        )
    assert extended


async def test_another_shard_count_is_refused_until_resharded(
    settings: Settings, db_dsn: str
) -> None:
    async with running_service(settings) as service:
        body = await get_json(service, "/api/shards")
        assert body["shard_count"] == 64 and body["unheld"] == 0
        assert {s["holder"] for s in body["shards"]} == {body["this_holder"]}
        [role] = body["roles"]  # one process: it runs housekeeping too
        assert (role["role"], role["holder"]) == ("housekeeping", body["this_holder"])
    with pytest.raises(BaseException) as raised:
        async with running_service(settings.replace(shard_count=16)):
            pass
    refusal = find_refusal(raised.value)
    assert refusal is not None
    assert str(refusal).startswith(
        "SHARD_COUNT: 16 asked for, but the database holds 64 shards: set SHARD_COUNT=64,"
        " or stop every replica and run `pump-predictor reshard 16`"
    )
    conn = await connect(db_dsn)
    try:
        assert await shard_leases.reshard(conn, 16) == (64, 0)
    finally:
        await conn.close()
    async with running_service(settings.replace(shard_count=16)) as service:
        body = await get_json(service, "/api/shards")
        assert body["shard_count"] == 16 and len(body["shards"]) == 16


async def test_an_older_single_cursor_is_split_into_every_shard(
    settings: Settings, db_dsn: str
) -> None:
    conn = await connect(db_dsn)
    try:
        await conn.execute(
            "INSERT INTO intake_cursor (name, last_id) VALUES ('coin_metrics', 1234)"
        )
        await shard_leases.configure(conn, 64)
        cursors = await shard_leases.load_cursors(conn, range(64))
        legacy = await conn.fetchval(
            "SELECT count(*) FROM intake_cursor WHERE name = 'coin_metrics'"
        )
    finally:
        await conn.close()
    assert set(cursors.values()) == {1234}
    assert legacy == 0


@pytest.fixture
def hooked(settings: Settings, receiver: WebhookReceiver) -> Settings:
    return settings.replace(n8n_webhook_url=receiver.url(), batch_timeout_seconds=0.01)


async def _models(conn: asyncpg.Connection, tmp_path: Path) -> list[int]:
    return await add_trained_models(conn, tmp_path, 901, FEATURES)


async def _predictors(service: Service, n: int) -> bool:
    return len([a for a in service.supervisor.actor_names if a.startswith("predictor-")]) == n


async def test_a_shard_taken_away_is_not_committed_and_catches_up_when_held_again(
    hooked: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=300)
    try:
        models = await _models(conn, tmp_path)
        # Heartbeats 0.6 s apart: the loss is noticed (or fenced) within a beat.
        async with running_service(hooked.replace(shard_lease_seconds=3.0)) as service:
            await wait_for(lambda: _predictors(service, len(models)), what="predictors")
            coins = [f"coin{i}" for i in range(12)]
            shards = service.shards
            assert shards is not None
            victim = shards.shard_of(coins[0])
            victims = [c for c in coins if shards.shard_of(c) == victim]
            first = [r for i, c in enumerate(coins) for r in coin_rows(c, 12, start=start, seed=i)]
            await insert_rows(conn, first)
            await wait_for(arrived(receiver, ticks_of(first)), what="first ticks")
            # Another holder takes the shard over for good (this one was "paused").
            await conn.execute(
                "UPDATE shard_leases SET holder = 'thief', generation = generation + 1,"
                " expires_at = now() + interval '1 hour' WHERE shard = $1",
                victim,
            )
            later = start + timedelta(seconds=100)
            second = [
                r for i, c in enumerate(coins) for r in coin_rows(c, 3, start=later, seed=50 + i)
            ]
            await insert_rows(conn, second)
            others = {t for t in ticks_of(second) if t[0] not in victims}
            stolen = {t for t in ticks_of(second) if t[0] in victims}
            await wait_for(arrived(receiver, others), what="the other shards")
            await wait_for(lambda: _is(victim not in shards.held), what="the loss noticed")
            await anyio.sleep(0.5)  # a late commit of the stolen shard would show by now
            assert not stolen & set(posted(receiver)), "a tick of a lost shard was committed"
            # The thief goes away: the shard comes back and catches up from its cursor.
            await conn.execute(
                "UPDATE shard_leases SET holder = NULL, expires_at = '-infinity' WHERE shard = $1",
                victim,
            )
            await wait_for(arrived(receiver, stolen), what="the stolen ticks")
            await wait_for(lambda: _is(victim in shards.held), what="the shard held again")
    finally:
        await conn.close()
    counts = posted(receiver)
    assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]


async def test_every_shard_is_shown_caught_up_once_quiet_though_the_rows_touched_two(
    hooked: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Rows of two coins (at most two of 64 shards), then nothing: every held shard's
    cursor still reaches the newest row (no shard had a row left to predict), so GET
    /api/shards shows none behind and a takeover re-reads nothing."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=300)
    try:
        models = await _models(conn, tmp_path)
        async with running_service(hooked) as service:
            await wait_for(lambda: _predictors(service, len(models)), what="predictors")
            shards = service.shards
            assert shards is not None
            coins = ["quietA", "quietB"]
            rows = [r for i, c in enumerate(coins) for r in coin_rows(c, 12, start=start, seed=i)]
            await insert_rows(conn, rows)
            newest = int(await conn.fetchval("SELECT max(id) FROM coin_metrics"))
            await wait_for(arrived(receiver, ticks_of(rows)), what="the ticks")

            async def none_behind() -> bool:
                body = await get_json(service, "/api/shards")
                return [s["ids_behind"] for s in body["shards"]] == [0] * 64

            await wait_for(none_behind, what="every shard's cursor at the newest row")
            cursors = await shard_leases.load_cursors(conn, range(64))
            assert set(cursors.values()) == {newest}
            assert len({shards.shard_of(c) for c in coins}) <= 2
    finally:
        await conn.close()
    assert max(posted(receiver).values()) == 1


async def test_a_shard_whose_holder_died_after_this_start_is_caught_up_past_the_age_bound(
    hooked: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """CATCHUP_MAX_AGE_SECONDS bounds a restart after downtime, not a takeover: a worker
    restarted after a kill (or any holder) must predict what the dead one left."""
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=300)
    try:
        models = await _models(conn, tmp_path)
        await shard_leases.configure(conn, 64)
        coin = "left-behind"
        shard = shard_leases.shard_of(coin, 64)
        rows = coin_rows(coin, 12, start=start, seed=3)
        await insert_rows(conn, rows)
        # Its holder was alive until just now: the lease runs out after this start.
        await conn.execute(
            "UPDATE shard_leases SET holder = 'killed', generation = 1,"
            " expires_at = now() + interval '3 s' WHERE shard = $1",
            shard,
        )
        settings = hooked.replace(catchup_max_age_seconds=0, shard_lease_seconds=2.0)
        async with running_service(settings) as service:
            await wait_for(lambda: _predictors(service, len(models)), what="predictors")
            await wait_for(
                arrived(receiver, ticks_of(rows)), timeout=20, what="the dead holder's tick"
            )
    finally:
        await conn.close()
    assert max(posted(receiver).values()) == 1


async def test_two_services_split_the_shards_and_a_stopped_one_hands_over_at_once(
    hooked: Settings, db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    conn = await connect(db_dsn)
    start = datetime.now(UTC) - timedelta(seconds=600)
    fast = hooked.replace(shard_lease_seconds=2.0)
    sent: list[dict[str, Any]] = []
    try:
        models = await _models(conn, tmp_path)
        async with running_service(fast) as a:
            async with running_service(fast.replace(api_port=free_port())) as b:
                await wait_for(lambda: _predictors(b, len(models)), what="b's predictors")
                assert a.shards is not None and b.shards is not None

                async def split() -> bool:
                    held = await shards_by_holder(conn)
                    return held == {a.shards.holder: 32, b.shards.holder: 32}  # type: ignore[union-attr]

                await wait_for(split, what="an even split")
                body = await get_json(b, "/api/shards")
                assert sorted(h["shards_held"] for h in body["holders"]) == [32, 32]
                for step in range(4):
                    rows = [
                        r
                        for i in range(40)
                        for r in coin_rows(
                            f"c{i}", 2, start=start + timedelta(seconds=30 * step), seed=step
                        )
                    ]
                    sent += rows
                    await insert_rows(conn, rows)
                    await anyio.sleep(0.1)
                await wait_for(arrived(receiver, ticks_of(sent)), what="b's ticks")
            # b stopped (SIGTERM path): its shards are released at once and a takes them.
            released = await shards_by_holder(conn)
            assert released == {a.shards.holder: 32}, released
            await wait_for(
                lambda: _all_held_by(conn, a.shards.holder),  # type: ignore[union-attr]
                timeout=5,
                what="a holding every shard",
            )
            rows = [r for i in range(40) for r in coin_rows(f"c{i}", 2, start=start, seed=9)]
            rows = [{**r, "timestamp": r["timestamp"] + timedelta(seconds=300)} for r in rows]
            sent += rows
            await insert_rows(conn, rows)
            await wait_for(arrived(receiver, ticks_of(sent)), what="a's ticks")
    finally:
        await conn.close()
    counts = posted(receiver)
    assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]


async def _all_held_by(conn: asyncpg.Connection, holder: str) -> bool:
    return await shards_by_holder(conn) == {holder: 64}


async def _is(value: bool) -> bool:
    return value
