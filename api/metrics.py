"""Prometheus metrics of the service, plus the engine's prefix-cache hit ratio at scrape time.

Admission control's metrics (rag/guard/admission.py) keep these names, which dashboards rely on:
``rag_admission_queue_depth{lane}``, ``rag_admission_inflight_requests``,
``rag_admission_inflight_tokens``, ``rag_engine_capacity_tokens``,
``rag_admission_wait_seconds{lane}`` and ``rag_admission_rejections_total{reason}``; the
process's own (``process_resident_memory_bytes`` ...) are exported too.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from rag.ask import Answer
from rag.engine import EngineClient, EnginePool, prefix_cache_counters
from rag.guard import LANES, AdmissionController, Lane

# Up to an ask's longest deadline (RAG_MAX_REQUEST_TIMEOUT_S, 300 s by default; 3600 at most).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
    1800, 3600,
)  # fmt: skip
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TOKEN_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)
STAGES = ("embed", "search", "rerank", "prompt", "total")
# rag/guard/admission.py's reasons for refusing an ask.
REJECTION_REASONS = (
    "queue_full",
    "deadline_estimate",
    "deadline",
    "first_token_deadline",
    "too_large",
)
# Liveness and readiness probes: counted apart, so that a /readyz 503 while the engine starts
# is no error of the service's.
PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rag_requests",
            "HTTP requests by route and status (a stream that ended with an error event counts "
            "with that error's status; /healthz and /readyz are rag_probe_requests)",
            ["route", "status"],
            registry=r,
        )
        self.probes = Counter(
            "rag_probe_requests",
            "Requests to /healthz and /readyz by route and status",
            ["route", "status"],
            registry=r,
        )
        self.stage = Histogram(
            "rag_stage_seconds",
            "Latency of each stage of an ask",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "rag_ttft_seconds", "Time to first answer token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Histogram(
            "rag_prompt_tokens", "Prompt tokens per ask", buckets=TOKEN_BUCKETS, registry=r
        )
        self.passages = Histogram(
            "rag_passages_per_prompt",
            "Passages placed in each prompt",
            buckets=(0, 1, 2, 3, 5, 8, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.shared_state_up = Gauge(
            "rag_shared_state_up",
            "1 while Redis (RAG_REDIS_URL) answers; 0: per-replica limits and the last keys seen",
            registry=r,
        )
        self.shared_state_outages = Counter(
            "rag_shared_state_outages", "Times Redis (RAG_REDIS_URL) became unreachable", registry=r
        )
        self.api_replicas = Gauge(
            "rag_api_replicas",
            "API replicas alive on the shared state, this one included (admission's share)",
            registry=r,
        )
        self.answer_cache_hits = Counter(
            "rag_answer_cache_hits", "Asks answered from the answer cache", registry=r
        )
        self.engine_restarts = Counter(
            "rag_engine_restarts", "Restarts of the managed engine after it died", registry=r
        )
        self.engine_ready = Gauge(
            "rag_engine_ready", "1 while the engine answers its health check", registry=r
        )
        self.cache_hit_ratio = Gauge(
            "rag_engine_prefix_cache_hit_ratio",
            "Engine prefix-cache hits / queries since the engine started",
            registry=r,
        )
        self.cache_hits = Gauge(
            "rag_engine_prefix_cache_hits", "Engine prefix-cache hit tokens", registry=r
        )
        self.cache_queries = Gauge(
            "rag_engine_prefix_cache_queries", "Engine prefix-cache queried tokens", registry=r
        )
        # Each replica of RAG_ENGINE_METRICS_URLS, labelled by its URL without credentials.
        self.replica_up = Gauge(
            "rag_engine_replica_up",
            "1 while the engine replica answers /metrics",
            ["replica"],
            registry=r,
        )
        self.replica_running = Gauge(
            "rag_engine_replica_requests_running",
            "Requests running on the engine replica (vllm:num_requests_running)",
            ["replica"],
            registry=r,
        )
        self.replica_waiting = Gauge(
            "rag_engine_replica_requests_waiting",
            "Requests waiting on the engine replica (vllm:num_requests_waiting)",
            ["replica"],
            registry=r,
        )
        self._pool: EnginePool | None = None
        self.queue_depth = Gauge(
            "rag_admission_queue_depth", "Asks waiting for admission", ["lane"], registry=r
        )
        self.inflight_requests = Gauge(
            "rag_admission_inflight_requests", "Asks admitted to the engine", registry=r
        )
        self.inflight_tokens = Gauge(
            "rag_admission_inflight_tokens",
            "KV-cache tokens reserved by admitted asks (prompt plus max_tokens)",
            registry=r,
        )
        self.capacity_tokens = Gauge(
            "rag_engine_capacity_tokens", "The engine's KV-cache tokens admission uses", registry=r
        )
        self.admission_wait = Histogram(
            "rag_admission_wait_seconds",
            "Time an admitted ask waited for admission",
            ["lane"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "rag_admission_rejections",
            f"Asks refused by admission control ({', '.join(REJECTION_REASONS)})",
            ["reason"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        # Every known label set exists from the start at 0: rate() sees the first error too.
        for stage in STAGES:
            self.stage.labels(stage)
        for lane in LANES:
            self.admission_wait.labels(lane)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)

    def count_request(self, route: str, status: int) -> None:
        counter = self.probes if route in PROBE_ROUTES else self.requests
        counter.labels(route, str(status)).inc()

    def prepare_requests(self, statuses: Iterable[tuple[str, int]]) -> None:
        """Create the (route, status) series each route may answer, at 0."""
        for route, status in statuses:
            counter = self.probes if route in PROBE_ROUTES else self.requests
            counter.labels(route, str(status))

    def observe_admission_wait(self, lane: Lane, seconds: float) -> None:
        self.admission_wait.labels(lane).observe(seconds)

    def count_rejection(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def track_admission(self, controller: AdmissionController) -> None:
        """Read the controller's queue, reservations and capacity at each scrape."""
        for lane in LANES:
            self.queue_depth.labels(lane).set_function(partial(controller.queue_depth, lane))
        self.inflight_requests.set_function(lambda: controller.inflight_requests)
        self.inflight_tokens.set_function(lambda: controller.inflight_tokens)
        self.capacity_tokens.set_function(lambda: controller.capacity.kv_tokens)

    def track_pool(self, pool: EnginePool) -> None:
        """Read the engine's replicas at each scrape, not the engine URL's one /metrics."""
        self._pool = pool
        for replica in pool.replicas:
            self.replica_up.labels(replica)

    async def _prefix_cache(self, engine: EngineClient) -> tuple[float, float]:
        """(hits, queries) of the engine, over the pool's replicas that answer when tracked."""
        if self._pool is None:
            try:
                return prefix_cache_counters(await engine.metrics_text())
            except Exception:  # the service's metrics stay available while the engine is down
                return float("nan"), float("nan")
        reading = await self._pool.read()  # never raises: a silent replica is down
        for replica in reading.replicas:
            self.replica_up.labels(replica.replica).set(1 if replica.up else 0)
            nan = float("nan")
            self.replica_running.labels(replica.replica).set(replica.running if replica.up else nan)
            self.replica_waiting.labels(replica.replica).set(replica.waiting if replica.up else nan)
        if not reading.live:
            return float("nan"), float("nan")
        return reading.prefix_hits, reading.prefix_queries

    def shared_state_changed(self, up: bool) -> None:
        self.shared_state_up.set(1 if up else 0)
        if not up:
            self.shared_state_outages.inc()

    def observe_answer(self, answer: Answer) -> None:
        t = answer.timings
        if t.cached:  # no stage ran: the cache's latency would only blur the histograms
            self.answer_cache_hits.inc()
            return
        stages = (t.embed_ms, t.search_ms, t.rerank_ms, t.prompt_ms, t.total_ms)
        for stage, ms in zip(STAGES, stages, strict=True):
            self.stage.labels(stage).observe(ms / 1000)
        if t.ttft_ms is not None:
            self.ttft.observe(t.ttft_ms / 1000)
        self.prompt_tokens.observe(answer.usage.prompt_tokens)
        self.passages.observe(len(answer.citations))

    async def render(self, engine: EngineClient, engine_ready: bool) -> bytes:
        self.engine_ready.set(1 if engine_ready else 0)
        hits, queries = await self._prefix_cache(engine)
        self.cache_hits.set(hits)
        self.cache_queries.set(queries)
        self.cache_hit_ratio.set(hits / queries if queries else 0.0)
        return generate_latest(self.registry)
