"""Fan-out of batches to a changing set of predictors.

Each predictor gets its own bounded stream. `publish` waits until every
predictor has room: a slow predictor slows the batcher, which then builds
bigger batches instead of queueing without limit.

The bus also keeps the acknowledgement books: a predictor that goes away
(deactivated, deleted, crashed and replaced) acknowledges whatever it still
owed, so the intake cursor never waits for a predictor that no longer exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.scoring.batch import Batch, BatchCompletion


@dataclass(slots=True)
class _Subscriber:
    send: MemoryObjectSendStream[Batch]
    phase_key: str
    history_rows: int
    owed: list[BatchCompletion] = field(default_factory=list)


class BatchBus:
    def __init__(self, buffer: int = 2) -> None:
        self._buffer = buffer
        self._subscribers: dict[int, _Subscriber] = {}

    @property
    def subscriber_ids(self) -> list[int]:
        return list(self._subscribers)

    def phase_keys(self) -> set[str]:
        return {s.phase_key for s in self._subscribers.values()}

    def history_rows(self) -> int:
        """The most history rows any predictor needs (0 without predictors)."""
        return max((s.history_rows for s in self._subscribers.values()), default=0)

    def subscribe(
        self, key: int, *, phase_key: str = "all", history_rows: int = 0
    ) -> MemoryObjectReceiveStream[Batch]:
        """A new stream for predictor `key`; replaces (and closes) an older one."""
        self.unsubscribe(key)
        send, receive = anyio.create_memory_object_stream[Batch](self._buffer)
        self._subscribers[key] = _Subscriber(send, phase_key, history_rows)
        return receive

    def update(self, key: int, *, phase_key: str, history_rows: int) -> None:
        """A predictor's needs changed (its model was swapped); applies from the next batch."""
        sub = self._subscribers.get(key)
        if sub is not None:
            sub.phase_key, sub.history_rows = phase_key, history_rows

    def end_stream(self, key: int) -> None:
        """No more batches for predictor `key`: it receives the ones buffered, then the
        end of its stream. It stays subscribed (owing them) until it unsubscribes; a
        batch published meanwhile is acknowledged for it (`publish`)."""
        sub = self._subscribers.get(key)
        if sub is not None:
            sub.send.close()

    def unsubscribe(self, key: int) -> None:
        sub = self._subscribers.pop(key, None)
        if sub is None:
            return
        sub.send.close()
        for completion in sub.owed:
            completion.ack(key)

    async def publish(self, batch: Batch) -> None:
        """Send to the predictors the batch's completion expects (a snapshot taken
        before its history was loaded); one that left meanwhile is acknowledged."""
        for key in batch.completion.expected:
            sub = self._subscribers.get(key)
            if sub is None:
                batch.completion.ack(key)
                continue
            sub.owed = [c for c in sub.owed if not c.done]
            sub.owed.append(batch.completion)
            try:
                await sub.send.send(batch)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The predictor went away between the snapshot and the send.
                batch.completion.ack(key)
                if self._subscribers.get(key) is sub:
                    self._subscribers.pop(key, None)

    def close(self) -> None:
        for key in list(self._subscribers):
            self.unsubscribe(key)
