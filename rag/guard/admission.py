"""Admission control sized to the engine: asks start while their tokens fit its KV cache.

An ask reserves its prompt tokens plus its max output tokens (what the engine may have to hold
for it) for as long as the engine works on it. It starts at once while the reservations fit the
engine's capacity (rag/guard/capacity.py) and fewer than its max sequences run; otherwise it
waits in a bounded queue with two lanes: asks reserving at most ``short_tokens`` go before longer
ones. Long asks together hold at most ``long_share`` of the capacity (one alone may hold more),
so a few long-context asks never take the whole cache and short asks always find room beside them. A
long ask that has waited ``aging_s`` goes next, so a stream of short asks cannot starve it: once
it is kept out only by the room short asks hold, new short asks wait for it; kept out by other
long asks, it holds up no short ask. Each ask has a deadline to its first token. It is refused
at once with ``OverloadedError`` (HTTP 503 with Retry-After) when the queue is full, or when its
estimated start (the asks in flight ending at the mean hold time of their lane) is past the
deadline; one whose deadline passes while it waits is refused then. An admitted ask whose first
token misses the deadline (the engine is slower than its capacity promised, e.g. another client
shares it) is aborted at the engine and refused the same way (in band when an event stream has
begun): no one waits minutes for a 504. An ask larger than the whole capacity can never start:
``AskTooLargeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, NoReturn, TypeVar

from rag.engine import EngineUnavailableError
from rag.errors import RagError
from rag.guard.capacity import EngineCapacity

T = TypeVar("T")
Lane = Literal["short", "long"]
LANES: tuple[Lane, ...] = ("short", "long")
HOLD_SMOOTHING = 0.3  # weight of the newest hold time in the running mean


class OverloadedError(RagError):
    """The ask cannot start before its deadline (HTTP 503); ``retry_after`` is the estimate."""

    def __init__(self, message: str, retry_after: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason  # queue_full, deadline_estimate, deadline, first_token_deadline

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class AskTooLargeError(RagError):
    """The ask reserves more tokens than the engine's whole KV cache (HTTP 413)."""


class TimeoutTooLongError(RagError):
    """A request's ``timeout_s`` is over ``RAG_MAX_REQUEST_TIMEOUT_S`` (HTTP 422)."""


@dataclass(frozen=True)
class Ticket:
    """An admitted ask: its reservation, its lane and how long it queued."""

    tokens: int
    lane: Lane
    waited_s: float


@dataclass(eq=False)
class _Waiter:
    tokens: int
    lane: Lane
    since: float
    granted: asyncio.Future[None] = field(repr=False)
    started: float = 0.0  # event-loop time it was admitted


class AdmissionController:
    def __init__(
        self,
        capacity: EngineCapacity,
        *,
        queue_size: int = 64,
        short_tokens: int = 32768,
        aging_s: float = 10.0,
        long_share: float = 0.5,
        timeout_s: float = 30.0,
        max_timeout_s: float = 300.0,
        observe_wait: Callable[[Lane, float], None] | None = None,
        count_rejection: Callable[[str], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.queue_size = queue_size
        self.short_tokens = short_tokens
        self.aging_s = aging_s
        self.long_share = long_share
        self.timeout_s = timeout_s
        self.max_timeout_s = max_timeout_s
        self._observe_wait = observe_wait
        self._count_rejection = count_rejection
        self._lanes: dict[Lane, deque[_Waiter]] = {lane: deque() for lane in LANES}
        self.inflight_requests = 0
        self.inflight_tokens = 0
        # Per lane: asks in flight and the tokens they hold.
        self._lane_inflight: dict[Lane, list[int]] = {lane: [0, 0] for lane in LANES}
        self.mean_hold_s: float | None = None  # None until an ask has finished
        self._lane_hold: dict[Lane, float | None] = dict.fromkeys(LANES)  # the same, per lane
        self._running: set[_Waiter] = set()

    def resize(self, capacity: EngineCapacity) -> None:
        """A new capacity (the engine restarted); waiting asks that now fit start."""
        self.capacity = capacity
        self._dispatch()

    def queue_depth(self, lane: Lane) -> int:
        return len(self._lanes[lane])

    def deadline(self, timeout_s: float | None, *, long_context: bool = False) -> float:
        """The event-loop time by which an ask arriving now must have its first token.

        Without its own ``timeout_s`` a long-context ask (``top_k: "auto"``, whose cold prefill
        alone can take half a minute on a GPU) gets the most a request may ask for."""
        if timeout_s is not None and timeout_s > self.max_timeout_s:
            raise TimeoutTooLongError(
                f"timeout_s: at most {self.max_timeout_s:g} seconds (RAG_MAX_REQUEST_TIMEOUT_S)"
            )
        default = self.max_timeout_s if long_context else self.timeout_s
        return asyncio.get_running_loop().time() + (timeout_s or default)

    def lane_of(self, tokens: int) -> Lane:
        return "short" if tokens <= self.short_tokens else "long"

    @contextlib.asynccontextmanager
    async def hold(self, tokens: int, deadline: float) -> AsyncIterator[Ticket]:
        """Reserve ``tokens`` until the block ends (done, error or cancel), waiting if needed."""
        if self.capacity.kv_tokens == 0:
            raise EngineUnavailableError("the engine's capacity is not known yet (starting)")
        if tokens > self.capacity.ask_limit:
            self.note_rejection("too_large")
            raise AskTooLargeError(
                f"the ask needs {tokens} tokens of the engine's KV cache (prompt plus max_tokens) "
                f"but the engine holds {self.capacity.ask_limit}: lower max_tokens or top_k"
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tokens, self.lane_of(tokens), loop.time(), loop.create_future())
        await self._admit(waiter, deadline)
        waited = loop.time() - waiter.since
        if self._observe_wait is not None:
            self._observe_wait(waiter.lane, waited)
        try:
            yield Ticket(tokens, waiter.lane, waited)
        finally:
            self._release(waiter, loop.time() - waiter.started)

    async def _admit(self, waiter: _Waiter, deadline: float) -> None:
        lane = self._lanes[waiter.lane]
        lane.append(waiter)
        self._dispatch()
        if waiter.granted.done():
            return
        if sum(map(len, self._lanes.values())) > self.queue_size:
            self._refuse(waiter, "queue_full", "the admission queue is full")
        estimate = self.estimated_wait_s(waiter)
        if estimate is not None and waiter.since + estimate > deadline:
            self._refuse(waiter, "deadline_estimate", "it cannot start before its deadline")
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(waiter.granted)
        except TimeoutError:
            if waiter.granted.done():  # granted as the deadline passed: too late all the same
                self._release(waiter, 0.0)
            self._refuse(waiter, "deadline", "its deadline passed while it waited")
        except BaseException:  # cancelled (the client went away): give the place back
            if waiter.granted.done():
                self._release(waiter, 0.0)
            else:
                self._withdraw(waiter)
            raise

    def estimated_wait_s(self, waiter: _Waiter) -> float | None:
        """Seconds until ``waiter`` may start: the asks in flight end, in turn, at their start
        plus the mean time an ask of their lane holds its reservation, until the room they free
        holds ``waiter`` and every ask ahead of it; None before any ask has finished."""
        ahead = [*self._ahead_of(waiter), waiter]
        cap = self.capacity
        need = sum(w.tokens for w in ahead)
        free = cap.kv_tokens - self.inflight_tokens
        seqs = math.inf if cap.max_seqs is None else cap.max_seqs - self.inflight_requests
        long_asks, long_tokens = self._lane_inflight["long"]
        long_need = sum(w.tokens for w in ahead if w.lane == "long")
        long_free = self.long_share * cap.kv_tokens - long_tokens

        def fits() -> bool:
            room = need <= free and len(ahead) <= seqs
            return room and (long_need == 0 or long_asks == 0 or long_need <= long_free)

        if fits():
            return 0.0
        now = asyncio.get_running_loop().time()
        ends = []
        for running in self._running:
            hold = self._lane_hold[running.lane] or self.mean_hold_s
            if hold is None:
                return None
            ends.append((max(running.started + hold, now), running))
        ends.sort(key=lambda end: end[0])
        last = now
        for last, running in ends:
            free, seqs = free + running.tokens, seqs + 1
            if running.lane == "long":
                long_asks, long_free = long_asks - 1, long_free + running.tokens
            if fits():
                return last - now
        if self.mean_hold_s is None:
            return None
        # More ahead than the engine holds at once: further rounds at the mean pace.
        rounds = max((need - free) / cap.kv_tokens, 0.0)
        if cap.max_seqs is not None:
            rounds = max(rounds, (len(ahead) - seqs) / cap.max_seqs)
        return last - now + rounds * self.mean_hold_s

    def _ahead_of(self, waiter: _Waiter) -> list[_Waiter]:
        short, long = list(self._lanes["short"]), list(self._lanes["long"])
        own = short if waiter.lane == "short" else long
        place = own.index(waiter) if waiter in own else len(own)
        if waiter.lane == "long":
            return [*short, *long[:place]]
        aged = [w for w in long if waiter.since - w.since >= self.aging_s]
        return [*aged, *short[:place]]

    def _aged_long(self) -> _Waiter | None:
        long = self._lanes["long"]
        if long and asyncio.get_running_loop().time() - long[0].since >= self.aging_s:
            return long[0]
        return None

    def _next(self) -> _Waiter | None:
        """The ask to start next if it fits: an aged long ask, else the first short one (unless
        an aged long ask is kept out only by the room short asks hold), else the first long one
        while no short ask waits."""
        short, long = self._lanes["short"], self._lanes["long"]
        aged = self._aged_long()
        if aged is not None and self._within_long_share(aged):  # else other long asks keep it out
            return aged
        if short:
            return short[0]
        return long[0] if long else None

    def _within_long_share(self, waiter: _Waiter) -> bool:
        asks, tokens = self._lane_inflight["long"]
        return asks == 0 or tokens + waiter.tokens <= self.long_share * self.capacity.kv_tokens

    def _fits(self, waiter: _Waiter) -> bool:
        if self.inflight_requests == 0:
            return True  # alone it always starts (a capacity that shrank after it queued)
        cap = self.capacity
        seqs_free = cap.max_seqs is None or self.inflight_requests < cap.max_seqs
        room = seqs_free and self.inflight_tokens + waiter.tokens <= cap.kv_tokens
        return room and (waiter.lane == "short" or self._within_long_share(waiter))

    def _dispatch(self) -> None:
        """Start waiting asks in turn while the next one fits (none overtakes a blocked one)."""
        while (waiter := self._next()) is not None and self._fits(waiter):
            self._lanes[waiter.lane].remove(waiter)
            self.inflight_requests += 1
            self.inflight_tokens += waiter.tokens
            self._lane_inflight[waiter.lane][0] += 1
            self._lane_inflight[waiter.lane][1] += waiter.tokens
            waiter.started = asyncio.get_running_loop().time()
            self._running.add(waiter)
            waiter.granted.set_result(None)

    def _withdraw(self, waiter: _Waiter) -> None:
        self._lanes[waiter.lane].remove(waiter)
        self._dispatch()  # it may have blocked the ones behind it

    def _release(self, waiter: _Waiter, held_s: float) -> None:
        self.inflight_requests -= 1
        self.inflight_tokens -= waiter.tokens
        self._lane_inflight[waiter.lane][0] -= 1
        self._lane_inflight[waiter.lane][1] -= waiter.tokens
        self._running.discard(waiter)
        if held_s > 0:
            self.mean_hold_s = _smoothed(self.mean_hold_s, held_s)
            self._lane_hold[waiter.lane] = _smoothed(self._lane_hold[waiter.lane], held_s)
        self._dispatch()

    def note_rejection(self, reason: str) -> None:
        if self._count_rejection is not None:
            self._count_rejection(reason)

    def _refuse(self, waiter: _Waiter, reason: str, why: str) -> NoReturn:
        """Take ``waiter`` out of the queue and raise ``OverloadedError`` with an estimate."""
        self.note_rejection(reason)
        estimate = self.estimated_wait_s(waiter)
        if waiter in self._lanes[waiter.lane]:
            self._withdraw(waiter)
        retry = estimate if estimate is not None else (self.mean_hold_s or 1.0)
        raise OverloadedError(
            f"the engine is at capacity and this ask was not started: {why} "
            f"({self.inflight_requests} asks in flight, {self.queue_depth('short')} short and "
            f"{self.queue_depth('long')} long waiting); retry in about {math.ceil(retry)} s",
            retry_after=retry,
            reason=reason,
        )


def _smoothed(mean: float | None, value: float) -> float:
    return value if mean is None else mean + HOLD_SMOOTHING * (value - mean)


async def before(
    deadline: float | None, awaitable: Awaitable[T], controller: AdmissionController | None
) -> T:
    """``awaitable``'s result if it comes by ``deadline`` (None: whenever it comes); otherwise
    it is cancelled (closing an engine stream aborts its request) and the ask is refused."""
    if deadline is None or controller is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        controller.note_rejection("first_token_deadline")
        retry = controller.mean_hold_s or 1.0
        raise OverloadedError(
            "the engine did not produce the first token before the ask's deadline "
            f"(RAG_REQUEST_TIMEOUT_S or timeout_s); retry in about {math.ceil(retry)} s",
            retry_after=retry,
            reason="first_token_deadline",
        ) from None
