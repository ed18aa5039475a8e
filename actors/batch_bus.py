"""Fan-out of batches to a changing set of predictors.

Each predictor gets its own bounded stream. `publish` waits until every
predictor has room: a slow predictor slows the batcher, which then builds
bigger batches instead of queueing without limit.
"""

from __future__ import annotations

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.messages import Batch


class BatchBus:
    def __init__(self, buffer: int = 2) -> None:
        self._buffer = buffer
        self._subscribers: dict[int, MemoryObjectSendStream[Batch]] = {}

    @property
    def subscriber_ids(self) -> list[int]:
        return list(self._subscribers)

    def subscribe(self, key: int) -> MemoryObjectReceiveStream[Batch]:
        """A new stream for predictor `key`; replaces (and closes) an older one."""
        self.unsubscribe(key)
        send, receive = anyio.create_memory_object_stream[Batch](self._buffer)
        self._subscribers[key] = send
        return receive

    def unsubscribe(self, key: int) -> None:
        send = self._subscribers.pop(key, None)
        if send is not None:
            send.close()

    async def publish(self, batch: Batch) -> None:
        for key, send in list(self._subscribers.items()):
            try:
                await send.send(batch)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The predictor went away between the snapshot and the send.
                if self._subscribers.get(key) is send:
                    self._subscribers.pop(key, None)

    def close(self) -> None:
        for key in list(self._subscribers):
            self.unsubscribe(key)
