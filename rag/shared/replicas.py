"""How many API replicas are alive: each one beats every ``interval_s`` into a sorted set
scored by the Redis server's clock, and counts the members that beat within ``ttl_s``.

Admission control gives each replica its share of the engine's KV cache from this count
(``rag.guard.capacity.share``), so M replicas together admit what the engine holds, not M times
it. While Redis is away the count stays at its last value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from rag.shared.redis import SharedState, SharedStateDown

log = logging.getLogger("rag.shared")


class ReplicaCount:
    def __init__(
        self,
        shared: SharedState,
        on_change: Callable[[int], None],
        *,
        interval_s: float = 1.0,
        ttl_s: float = 3.0,
    ) -> None:
        self.shared = shared
        self.on_change = on_change
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.count = 1
        self._key = shared.key("replicas")
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> int:
        """Beat once and return the live count (this replica included)."""

        async def beat(client: Redis) -> int:
            seconds, micros = await client.time()
            now = seconds + micros / 1e6
            pipe = client.pipeline()
            pipe.zadd(self._key, {self.shared.replica: now})
            pipe.zremrangebyscore(self._key, "-inf", now - self.ttl_s)
            pipe.zcard(self._key)
            pipe.expire(self._key, int(self.ttl_s * 10) + 1)
            results = await pipe.execute()
            return max(1, int(results[2]))

        count = await self.shared.acall(beat)
        if count != self.count:
            log.info("API replicas alive: %d (was %d)", count, self.count)
            self.count = count
            self.on_change(count)
        return count

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(SharedStateDown):
                await self.beat()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(SharedStateDown):
            await self.shared.acall(lambda c: c.zrem(self._key, self.shared.replica))
