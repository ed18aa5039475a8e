"""Webhooks survive restarts: the outbox is the truth, the Service only delivers it."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
from waiting import wait_for
from webhook_receiver import Answer, WebhookReceiver, insert_active_model, store_predictions

from actors.app.service import Service
from storage.config import Settings
from storage.db.pool import connect

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _enqueue_alert(settings: Settings) -> int:
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 41)  # no own URL: the global one applies
        await store_predictions(
            conn, model, [("CoinA", T0, 0.9)], default_url=settings.n8n_webhook_url
        )
        return model
    finally:
        await conn.close()


async def _attempt_outcomes(settings: Settings) -> list[str]:
    conn = await connect(settings.db_dsn)
    try:
        rows = await conn.fetch("SELECT outcome FROM webhook_attempts ORDER BY id")
    finally:
        await conn.close()
    return [r["outcome"] for r in rows]


async def test_a_receiver_down_across_a_service_restart_gets_the_job_afterwards(
    settings: Settings,
) -> None:
    receiver = await WebhookReceiver().start()
    await receiver.stop()  # down: its port now refuses connections
    settings = settings.replace(n8n_webhook_url=receiver.url("/hook"))
    await _enqueue_alert(settings)
    try:
        first = Service(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            await wait_for(
                lambda: _attempt_outcomes(settings), what="a failed attempt before the restart"
            )
            await first.shutdown()
            tg.cancel_scope.cancel()
        assert set(await _attempt_outcomes(settings)) == {"retry"}

        await receiver.start()
        second = Service(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(second.run)

            async def delivered() -> bool:
                return (await _attempt_outcomes(settings))[-1:] == ["delivered"]

            await wait_for(delivered, what="delivery after the restart")
            await second.shutdown()
            tg.cancel_scope.cancel()
        [request] = receiver.received()
        assert request.body["coin_id"] == "CoinA"
        assert request.body["predictions"][0]["model"]["id"] == 41
    finally:
        await receiver.stop()


async def test_service_shutdown_lets_a_webhook_in_flight_finish(settings: Settings) -> None:
    receiver = await WebhookReceiver(default=Answer(hold=True)).start()
    settings = settings.replace(n8n_webhook_url=receiver.url("/hook"))
    await _enqueue_alert(settings)
    try:
        service = Service(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)

            await wait_for(lambda: receiver.in_flight == 1, what="the POST in flight")
            tg.start_soon(service.shutdown)

            await wait_for(lambda: service.state.draining, what="shutdown under way")
            receiver.release()
        assert await _attempt_outcomes(settings) == ["delivered"]
    finally:
        await receiver.stop()
