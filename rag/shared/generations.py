"""Index generations: a counter per index that every change of its content bumps.

Syncs, uploads and deletions (the service's jobs and ``rag-ingest``) call ``bump``; the answer
cache keys its entries by the generation, so an answer cached before a change is never served
after it. A bump that cannot reach Redis is kept and made before the next read of any
generation, so a Redis that comes back cannot serve an answer older than the change.
"""

from __future__ import annotations

import logging
import threading

from rag.shared.redis import SharedState, SharedStateDown

log = logging.getLogger("rag.shared")


class IndexGenerations:
    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._pending: set[str] = set()

    def _key(self, index: str) -> str:
        return self.shared.key("gen", index)

    def bump(self, index: str) -> None:
        """The index changed (from any thread); never raises."""
        try:
            self.shared.call(lambda c: c.incr(self._key(index)))
        except SharedStateDown:
            log.warning(
                "index %r changed while Redis is away: its cached answers are dropped "
                "when it is back",
                index,
            )
            with self._lock:
                self._pending.add(index)

    async def current(self, index: str) -> int:
        """The index's generation; ``SharedStateDown`` while Redis is away."""
        with self._lock:
            pending, self._pending = self._pending, set()
        try:
            for name in pending:
                await self.shared.acall(lambda c, n=name: c.incr(self._key(n)))  # type: ignore[misc]
        except SharedStateDown:
            with self._lock:
                self._pending |= pending
            raise
        value = await self.shared.acall(lambda c: c.get(self._key(index)))
        return int(value or 0)
