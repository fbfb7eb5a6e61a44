"""The Redis connection the replicas share, and what happens when Redis goes away.

Calls go through ``call`` (threads: the rate limiter runs in FastAPI's dependency threads and on
the event loop) or ``acall`` (the event loop). Each has short socket timeouts; after a failure
the connection is left alone for ``retry_s``, so a Redis that is down costs one timeout per
``retry_s``, not one per request. While it is down callers get ``SharedStateDown`` and fall
back to what they can do alone; the first failure is logged as a warning, the recovery as info,
and ``on_change(up)`` tells the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("rag.shared")

T = TypeVar("T")
PREFIX = "rag:"


class SharedStateDown(Exception):
    """Redis cannot be reached now (or was not a moment ago): do without it."""


class SharedState:
    """One Redis for every replica; ``replica`` names this process among them."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.25,
        retry_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.replica = uuid.uuid4().hex[:12]
        self.retry_s = retry_s
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._up = True
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "decode_responses": True,
        }
        self.sync = redis.Redis.from_url(url, **options)
        self.aio = aioredis.Redis.from_url(url, **options)

    @property
    def up(self) -> bool:
        return self._up

    def key(self, *parts: str) -> str:
        return PREFIX + ":".join(parts)

    def _check(self) -> None:
        if self._clock() < self._down_until:
            raise SharedStateDown(f"Redis at {self.redacted_url} is unreachable")

    def _failed(self, exc: Exception) -> SharedStateDown:
        with self._lock:
            self._down_until = self._clock() + self.retry_s
            was_up, self._up = self._up, False
        if was_up:
            log.warning(
                "shared state: Redis at %s is unreachable (%s): per-replica limits and the last "
                "keys seen until it is back; retrying every %.0f s",
                self.redacted_url,
                exc,
                self.retry_s,
            )
            if self._on_change is not None:
                self._on_change(False)
        return SharedStateDown(str(exc))

    def _succeeded(self) -> None:
        if not self._up:
            with self._lock:
                was_up, self._up = self._up, True
            if not was_up:
                log.info("shared state: Redis at %s is back", self.redacted_url)
                if self._on_change is not None:
                    self._on_change(True)

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client)`` on the blocking client; ``SharedStateDown`` if Redis is away."""
        self._check()
        try:
            result = fn(self.sync)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._succeeded()
        return result

    async def acall(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``await fn(client)`` on the asyncio client; ``SharedStateDown`` if Redis is away."""
        self._check()
        try:
            result = await fn(self.aio)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._succeeded()
        return result

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for logs."""
        scheme, sep, rest = self.url.partition("://")
        if "@" in rest:
            rest = "***@" + rest.rsplit("@", 1)[1]
        return f"{scheme}{sep}{rest}"

    async def aclose(self) -> None:
        await self.aio.aclose()
        self.sync.close()
