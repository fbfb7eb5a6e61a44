"""Admission control sized to the engine (rag/guard/admission.py).

The controller's rules with real asyncio (lanes, aging, deadlines, release on every path) and
the capacity read from the real engine's /metrics; the acceptance against a service over the
real engine is in tests/test_admission_service.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from rag.engine import EngineClient
from rag.guard import (
    AdmissionController,
    AskTooLargeError,
    OverloadedError,
    TimeoutTooLongError,
    before,
)
from rag.guard.capacity import EngineCapacity, kv_tokens_from_metrics, learn_capacity

T = TypeVar("T")


def controller(
    kv_tokens: int = 1000, max_seqs: int | None = None, **kw: Any
) -> AdmissionController:
    rejections: list[str] = kw.pop("rejections", [])
    return AdmissionController(
        EngineCapacity(kv_tokens, max_seqs, "test"),
        count_rejection=rejections.append,
        **{"short_tokens": 200, **kw},
    )


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


async def ask(
    c: AdmissionController,
    name: str,
    tokens: int,
    started: list[str],
    release: asyncio.Event,
    timeout_s: float = 5.0,
) -> None:
    async with c.hold(tokens, c.deadline(timeout_s)):
        started.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_asks_that_fit_start_at_once_and_give_their_tokens_back_when_done() -> None:
    async def main() -> None:
        c = controller(kv_tokens=1000, short_tokens=600)
        async with c.hold(400, c.deadline(None)) as a, c.hold(600, c.deadline(None)) as b:
            assert max(a.waited_s, b.waited_s) < 0.05
            assert (c.inflight_requests, c.inflight_tokens) == (2, 1000)
        assert (c.inflight_requests, c.inflight_tokens) == (0, 0)

    run(main)


def test_short_asks_behind_long_ones_start_first() -> None:
    async def main() -> list[str]:
        c = controller(kv_tokens=1000)
        started: list[str] = []
        done, free = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(ask(c, "holder", 1000, started, free))
        await settle()
        tasks = []
        for name, tokens in (("long-1", 600), ("long-2", 300), ("short-1", 100), ("short-2", 50)):
            tasks.append(asyncio.create_task(ask(c, name, tokens, started, done)))
            await settle()
        assert (c.queue_depth("short"), c.queue_depth("long")) == (2, 2)
        free.set()
        await holder
        await settle()
        done.set()
        await asyncio.gather(*tasks)
        return started

    assert run(main) == ["holder", "short-1", "short-2", "long-1", "long-2"]


def test_a_long_ask_that_waited_past_the_aging_bound_goes_before_short_ones() -> None:
    async def main() -> list[str]:
        c = controller(kv_tokens=1000, aging_s=0.2)
        started: list[str] = []
        done, free = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(ask(c, "holder", 1000, started, free))
        await settle()
        long = asyncio.create_task(ask(c, "long", 900, started, done))
        await asyncio.sleep(0.3)
        shorts = [asyncio.create_task(ask(c, f"short-{k}", 100, started, done)) for k in (1, 2)]
        await settle()
        free.set()
        await holder
        await settle()
        done.set()
        await asyncio.gather(long, *shorts)
        return started

    assert run(main) == ["holder", "long", "short-1", "short-2"]


def test_long_asks_together_hold_at_most_their_share_so_short_asks_find_room() -> None:
    async def main() -> tuple[list[str], tuple[int, int]]:
        c = controller(kv_tokens=1000, long_share=0.5)
        started: list[str] = []
        done = asyncio.Event()
        tasks = []
        for name, tokens in (("long-1", 300), ("long-2", 300), ("short", 200)):
            tasks.append(asyncio.create_task(ask(c, name, tokens, started, done)))
            await settle()
        depth = (c.queue_depth("short"), c.queue_depth("long"))
        done.set()
        await asyncio.gather(*tasks)
        return started, depth

    started, depth = run(main)
    # 600 tokens would fit the cache, but not the long lane's 500: long-2 waits, the short starts.
    assert started[:2] == ["long-1", "short"]
    assert depth == (0, 1)


def test_one_long_ask_alone_may_hold_more_than_the_share() -> None:
    async def main() -> list[str]:
        c = controller(kv_tokens=1000, long_share=0.5)
        started: list[str] = []
        done = asyncio.Event()
        tasks = [asyncio.create_task(ask(c, "big", 800, started, done))]
        await settle()
        tasks.append(asyncio.create_task(ask(c, "short", 150, started, done)))
        await settle()
        done.set()
        await asyncio.gather(*tasks)
        return started

    assert run(main) == ["big", "short"]


def test_an_aged_long_ask_kept_out_by_other_long_ones_holds_up_no_short_ask() -> None:
    async def main() -> list[str]:
        c = controller(kv_tokens=1000, long_share=0.5, aging_s=0.1)
        started: list[str] = []
        first_done, done = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(ask(c, "long-1", 400, started, first_done))
        await settle()
        second = asyncio.create_task(ask(c, "long-2", 400, started, done))
        await asyncio.sleep(0.2)  # long-2 has aged, kept out by long-1's share
        shorts = [asyncio.create_task(ask(c, f"short-{k}", 100, started, done)) for k in (1, 2)]
        await settle()
        first_done.set()
        await first
        await settle()
        done.set()
        await asyncio.gather(second, *shorts)
        return started

    assert run(main) == ["long-1", "short-1", "short-2", "long-2"]


def test_an_aged_long_ask_kept_out_by_short_ones_makes_new_short_asks_wait() -> None:
    async def main() -> list[str]:
        c = controller(kv_tokens=1000, long_share=0.5, aging_s=0.1)
        started: list[str] = []
        early_done, done = asyncio.Event(), asyncio.Event()
        early = [
            asyncio.create_task(ask(c, f"early-{k}", 200, started, early_done)) for k in range(4)
        ]
        await settle()
        long = asyncio.create_task(ask(c, "long", 400, started, done))
        await asyncio.sleep(0.2)  # aged; only the 800 tokens the short asks hold keep it out
        late = asyncio.create_task(ask(c, "late-short", 100, started, done))
        await settle()
        assert "late-short" not in started  # it would fit (900 of 1000), but the long ask is next
        early_done.set()
        await asyncio.gather(*early)
        await settle()
        done.set()
        await asyncio.gather(long, late)
        return started

    assert run(main)[4:] == ["long", "late-short"]


def test_a_full_queue_refuses_at_once_with_a_retry_after() -> None:
    async def main() -> tuple[OverloadedError, float, list[str]]:
        rejections: list[str] = []
        c = controller(kv_tokens=1000, queue_size=1, rejections=rejections)
        started: list[str] = []
        free = asyncio.Event()
        tasks = [asyncio.create_task(ask(c, n, 1000, started, free)) for n in ("a", "b")]
        await settle()
        t = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            await ask(c, "c", 10, started, free)
        elapsed = time.monotonic() - t
        free.set()
        await asyncio.gather(*tasks)
        return refused.value, elapsed, rejections

    error, elapsed, rejections = run(main)
    assert elapsed < 0.1
    assert error.reason == "queue_full"
    assert rejections == ["queue_full"]
    assert int(error.retry_after_header) >= 1


async def refused_behind_a_full_cache(
    c: AdmissionController, tokens: int, timeout_s: float
) -> tuple[OverloadedError, float]:
    """The refusal of an ask sent while another holds the whole cache, and how long it took."""
    started: list[str] = []
    free = asyncio.Event()
    holder = asyncio.create_task(ask(c, "holder", c.capacity.kv_tokens, started, free))
    await settle()
    t = time.monotonic()
    with pytest.raises(OverloadedError) as refused:
        await ask(c, "refused", tokens, started, free, timeout_s=timeout_s)
    elapsed = time.monotonic() - t
    free.set()
    await holder
    return refused.value, elapsed


def test_an_ask_whose_estimated_start_is_past_its_deadline_is_refused_at_once() -> None:
    async def main() -> tuple[OverloadedError, float]:
        c = controller(kv_tokens=1000)
        async with c.hold(500, c.deadline(None)):
            await asyncio.sleep(0.5)  # the engine's pace: an ask holds its tokens ~0.5 s
        return await refused_behind_a_full_cache(c, 1000, timeout_s=0.2)

    error, elapsed = run(main)
    assert elapsed < 0.1
    assert error.reason == "deadline_estimate"
    assert 0.4 < error.retry_after < 1.0  # one more full cache drained at ~0.5 s


def test_the_estimate_knows_long_asks_hold_their_tokens_longer_than_short_ones() -> None:
    async def main() -> tuple[OverloadedError, float]:
        c = controller(kv_tokens=1000)
        async with c.hold(500, c.deadline(None)):
            await asyncio.sleep(0.6)  # a long ask holds ~0.6 s
        for _ in range(5):
            async with c.hold(100, c.deadline(None)):
                await asyncio.sleep(0.02)  # short ones ~0.02 s: the mean of all is short
        return await refused_behind_a_full_cache(c, 100, timeout_s=0.3)

    error, elapsed = run(main)
    assert elapsed < 0.1  # at once, not after its 0.3 s deadline passed in the queue
    assert error.reason == "deadline_estimate"
    assert 0.4 < error.retry_after < 1.5  # when the long ask in flight should end (~0.6 s)


def test_an_ask_whose_deadline_passes_while_it_waits_is_refused_then() -> None:
    async def main() -> tuple[OverloadedError, float, AdmissionController]:
        c = controller(kv_tokens=1000)
        return (*await refused_behind_a_full_cache(c, 100, timeout_s=0.3), c)

    error, elapsed, c = run(main)
    assert 0.25 < elapsed < 1.0
    assert error.reason == "deadline"
    assert c.queue_depth("short") == 0
    assert c.inflight_requests == 0


def test_cancelled_asks_give_back_their_place_and_their_tokens() -> None:
    async def main() -> AdmissionController:
        c = controller(kv_tokens=1000)
        started: list[str] = []
        never = asyncio.Event()
        holder = asyncio.create_task(ask(c, "holder", 1000, started, never))
        waiter = asyncio.create_task(ask(c, "waiter", 100, started, never))
        await settle()
        assert c.queue_depth("short") == 1
        assert c.inflight_tokens == 1000
        waiter.cancel()
        holder.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        return c

    c = run(main)
    assert (c.queue_depth("short"), c.inflight_requests, c.inflight_tokens) == (0, 0, 0)


def test_an_admitted_ask_whose_first_token_misses_its_deadline_is_refused() -> None:
    async def main() -> tuple[OverloadedError, float]:
        c = controller()
        t = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            await before(c.deadline(0.1), asyncio.sleep(5), c)  # an engine that stalls
        return refused.value, time.monotonic() - t

    error, elapsed = run(main)
    assert error.reason == "first_token_deadline"
    assert 0.05 < elapsed < 1


def test_max_sequences_bound_the_asks_running_at_once() -> None:
    async def main() -> int:
        c = controller(kv_tokens=10_000, max_seqs=2)
        started: list[str] = []
        free = asyncio.Event()
        tasks = [asyncio.create_task(ask(c, str(k), 10, started, free)) for k in range(3)]
        await settle()
        running = len(started)
        free.set()
        await asyncio.gather(*tasks)
        return running

    assert run(main) == 2


def test_an_ask_larger_than_the_whole_cache_and_a_timeout_over_the_maximum_are_refused() -> None:
    async def main() -> None:
        c = controller(kv_tokens=1000, max_timeout_s=60)
        with pytest.raises(AskTooLargeError, match="1001 tokens"):
            async with c.hold(1001, c.deadline(None)):
                pass
        with pytest.raises(TimeoutTooLongError, match="at most 60"):
            c.deadline(61)

    run(main)


def test_long_context_asks_without_their_own_timeout_get_the_maximum() -> None:
    async def main() -> None:
        c = controller(timeout_s=30, max_timeout_s=300)
        now = asyncio.get_running_loop().time()
        assert c.deadline(None) - now == pytest.approx(30, abs=1)
        assert c.deadline(None, long_context=True) - now == pytest.approx(300, abs=1)
        assert c.deadline(45, long_context=True) - now == pytest.approx(45, abs=1)

    run(main)


@pytest.mark.engine
def test_the_capacity_is_learned_from_the_engines_metrics(engine_url: str) -> None:
    async def main() -> tuple[str, EngineCapacity, EngineCapacity, int]:
        engine = EngineClient(engine_url)
        try:
            text = await engine.metrics_text()
            learned = await learn_capacity(engine)
            overridden = await learn_capacity(engine, kv_tokens=5000, max_seqs=3)
            return text, learned, overridden, (await engine.model_info()).max_model_len
        finally:
            await engine.aclose()

    text, learned, overridden, window = run(main)
    assert learned.kv_tokens == kv_tokens_from_metrics(text)
    assert learned.kv_tokens >= window  # vLLM starts only with a cache for one full window
    assert "num_gpu_blocks" in learned.source
    assert learned.max_seqs is None
    assert (overridden.kv_tokens, overridden.max_seqs) == (5000, 3)


def test_the_capacity_sums_the_engines_and_ignores_an_unknown_block_count() -> None:
    text = "\n".join(
        [
            "# TYPE vllm:cache_config_info gauge",
            'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="100"} 1.0',
            'vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="50"} 1.0',
            'vllm:cache_config_info{block_size="16",engine="2",num_gpu_blocks="None"} 1.0',
        ]
    )
    assert kv_tokens_from_metrics(text) == 150 * 16
    assert kv_tokens_from_metrics("vllm:num_requests_running 0.0") is None
