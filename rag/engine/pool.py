"""The engine as a pool of vLLM replicas, each read through its own ``/metrics``.

A router in front of several replicas (vllm-router, or any balancer) answers ``/metrics`` from
one replica only, so the pool's KV cache, its queues and its prefix-cache hit ratio are read
from every replica (``RAG_ENGINE_METRICS_URLS``), concurrently and with a short timeout. A
replica that does not answer is reported as down and left out of the sums: reading the pool
never raises.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from rag.engine.client import prefix_cache_counters

log = logging.getLogger("rag.engine")

WATCH_INTERVAL_S = 10.0  # how often the pool is read for replicas that stopped or came back

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def kv_tokens_from_metrics(text: str) -> int | None:
    """KV-cache tokens from vLLM's ``/metrics`` text, summed over its engines; None if absent.

    vLLM exports its cache configuration as the labels of one gauge per engine,
    ``vllm:cache_config_info{num_gpu_blocks="728",block_size="128",...} 1.0``.
    """
    total = 0
    for line in text.splitlines():
        if not line.startswith("vllm:cache_config_info{"):
            continue
        labels = dict(_LABEL.findall(line[: line.rfind("}")]))
        blocks, size = labels.get("num_gpu_blocks", ""), labels.get("block_size", "")
        if blocks.isdigit() and size.isdigit():
            total += int(blocks) * int(size)
    return total or None


def gauge_sum(text: str, name: str) -> float:
    """The samples of gauge ``name`` in Prometheus text, summed over their label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def replica_name(url: str) -> str:
    """A replica's base URL as a label and in logs: no credentials, no query, no /metrics."""
    parsed = httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None)
    return str(parsed).rstrip("/").removesuffix("/metrics")


def metrics_url(url: str) -> str:
    """``http://h:8000``, ``http://h:8000/v1`` or ``http://h:8000/metrics`` → the /metrics URL."""
    base = url.strip().rstrip("/")
    if base.endswith("/metrics"):
        return base
    return base.removesuffix("/v1") + "/metrics"


@dataclass(frozen=True)
class ReplicaReading:
    """One replica's /metrics at one moment; ``up`` False when it did not answer."""

    replica: str  # its base URL without credentials (replica_name)
    up: bool
    kv_tokens: int | None = None
    running: float = 0.0  # vllm:num_requests_running
    waiting: float = 0.0  # vllm:num_requests_waiting
    prefix_hits: float = 0.0
    prefix_queries: float = 0.0


@dataclass(frozen=True)
class PoolReading:
    replicas: tuple[ReplicaReading, ...]

    @property
    def live(self) -> tuple[ReplicaReading, ...]:
        return tuple(r for r in self.replicas if r.up)

    @property
    def kv_tokens(self) -> int | None:
        """The KV-cache tokens of the replicas that answered and report theirs; None if none."""
        known = [r.kv_tokens for r in self.live if r.kv_tokens is not None]
        return sum(known) if known else None

    @property
    def prefix_hits(self) -> float:
        return sum(r.prefix_hits for r in self.live)

    @property
    def prefix_queries(self) -> float:
        return sum(r.prefix_queries for r in self.live)


def read_replica(replica: str, text: str) -> ReplicaReading:
    """A replica's reading from its /metrics text."""
    hits, queries = prefix_cache_counters(text)
    return ReplicaReading(
        replica,
        up=True,
        kv_tokens=kv_tokens_from_metrics(text),
        running=gauge_sum(text, "vllm:num_requests_running"),
        waiting=gauge_sum(text, "vllm:num_requests_waiting"),
        prefix_hits=hits,
        prefix_queries=queries,
    )


def _basic_auth(url: str) -> httpx.BasicAuth | None:
    parsed = httpx.URL(url)
    return httpx.BasicAuth(parsed.username, parsed.password) if parsed.username else None


def _state(reading: PoolReading) -> tuple[tuple[bool, ...], int | None]:
    return tuple(r.up for r in reading.replicas), reading.kv_tokens


class EnginePool:
    """The replicas' /metrics, read together; the engine's key, if any, as the bearer."""

    def __init__(
        self, urls: Sequence[str], *, api_key: str | None = None, timeout: float = 3.0
    ) -> None:
        if not urls:
            raise ValueError("an engine pool needs at least one replica URL")
        self.replicas = tuple(replica_name(metrics_url(u)) for u in urls)
        # Credentials in a URL go as basic auth, so that no log line (httpx's) shows them.
        self._auth = tuple(_basic_auth(u) for u in urls)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0))
        )
        self._down: set[str] = set()  # replicas last seen down, to log each change once

    async def aclose(self) -> None:
        await self._http.aclose()

    async def read(self) -> PoolReading:
        replicas = zip(self.replicas, self._auth, strict=True)
        readings = await asyncio.gather(*(self._read(name, auth) for name, auth in replicas))
        return PoolReading(tuple(readings))

    async def watch(
        self, on_change: Callable[[], Awaitable[object]], *, interval: float = WATCH_INTERVAL_S
    ) -> None:
        """Read the pool every ``interval`` seconds, forever; call ``on_change`` when a replica
        stopped or came back or the pool's KV cache changed (e.g. to re-learn its capacity)."""
        seen = _state(await self.read())
        while True:
            await asyncio.sleep(interval)
            state = _state(await self.read())
            if state != seen:
                await on_change()
            seen = state

    async def _read(self, replica: str, auth: httpx.BasicAuth | None) -> ReplicaReading:
        try:
            response = await self._http.get(
                f"{replica}/metrics", auth=auth or httpx.USE_CLIENT_DEFAULT
            )
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")  # its message has no URL
            reading = read_replica(replica, response.text)
        except (httpx.HTTPError, ValueError) as exc:
            if replica not in self._down:
                reason = str(exc) or type(exc).__name__
                log.warning("engine replica %s does not answer /metrics: %s", replica, reason)
                self._down.add(replica)
            return ReplicaReading(replica, up=False)
        if replica in self._down:
            log.info("engine replica %s answers /metrics again", replica)
            self._down.discard(replica)
        return reading
