"""Per-key rate limits: requests per second and prompt tokens per minute, as token buckets.

``check_request`` runs before any work and takes one request from the key's request bucket;
it also refuses while the key's prompt-token budget is spent. ``charge_tokens`` runs once the
prompt is fitted (its size known) and before the engine is called. A prompt larger than a whole
minute's budget is admitted when the bucket is full and leaves it in debt, so the long-run rate
holds and no prompt is refused forever. Both raise ``RateLimitedError`` with ``retry_after``.
A limit of 0 means unlimited. Each call is O(1) under one lock, so threads and tasks may share
a limiter.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rag.errors import RagError
from rag.guard.keys import Principal


class RateLimitedError(RagError):
    """A key is over one of its rates (HTTP 429); ``retry_after`` says when to come back."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1, as HTTP's ``Retry-After`` wants them."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass
class TokenBucket:
    """``capacity`` units, refilled at ``rate`` per second; the level may go below 0 (debt)."""

    capacity: float
    rate: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` (at most a full bucket) is available; 0 when it is now."""
        need = min(amount, self.capacity) - self.level
        return max(0.0, need / self.rate)


@dataclass
class _KeyBuckets:
    rps: float
    tokens_per_minute: int
    requests: TokenBucket | None
    tokens: TokenBucket | None


class RateLimiter:
    """Buckets per key name, sized by the key's own limits or the service defaults."""

    def __init__(
        self,
        rps: float,
        tokens_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_rps = rps
        self.default_tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyBuckets] = {}

    def _buckets(self, principal: Principal, now: float) -> _KeyBuckets:
        rps = principal.limits.rps or self.default_rps
        tpm = principal.limits.tokens_per_minute or self.default_tokens_per_minute
        buckets = self._keys.get(principal.name)
        if buckets is None or (buckets.rps, buckets.tokens_per_minute) != (rps, tpm):
            # New key, or its limits changed in the key file: start it with full buckets.
            requests = TokenBucket(max(1.0, rps), rps, max(1.0, rps), now) if rps > 0 else None
            tokens = TokenBucket(tpm, tpm / 60, tpm, now) if tpm > 0 else None
            buckets = self._keys[principal.name] = _KeyBuckets(rps, tpm, requests, tokens)
        for bucket in (buckets.requests, buckets.tokens):
            if bucket is not None:
                bucket.refill(now)
        return buckets

    def check_request(self, principal: Principal) -> None:
        """Take one request from the key's budget, or raise ``RateLimitedError``."""
        with self._lock:
            buckets = self._buckets(principal, self._clock())
            tokens = buckets.tokens
            if tokens is not None and tokens.level <= 0:
                wait = tokens.wait_for(1)
                raise RateLimitedError(
                    f"key {principal.name!r} spent its {buckets.tokens_per_minute} prompt "
                    f"tokens per minute; retry in {wait:.1f} s",
                    wait,
                )
            requests = buckets.requests
            if requests is not None:
                wait = requests.wait_for(1)
                if wait > 0:
                    raise RateLimitedError(
                        f"key {principal.name!r} is over {buckets.rps:g} requests per second; "
                        f"retry in {wait:.1f} s",
                        wait,
                    )
                requests.level -= 1

    def charge_tokens(self, principal: Principal, n: int) -> None:
        """Take a fitted prompt's ``n`` tokens from the key's budget, or raise (nothing taken)."""
        with self._lock:
            buckets = self._buckets(principal, self._clock())
            tokens = buckets.tokens
            if tokens is None:
                return
            wait = tokens.wait_for(n)
            if wait > 0:
                raise RateLimitedError(
                    f"a {n}-token prompt is over key {principal.name!r}'s "
                    f"{buckets.tokens_per_minute} prompt tokens per minute; "
                    f"retry in {wait:.1f} s",
                    wait,
                )
            tokens.level -= n
