"""The FastAPI application: `create_app(settings)`; long-lived clients are built in `lifespan`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from api.auth import Access
from api.deps import Services
from api.docs_page import router as docs_router
from api.errors import install_error_handlers
from api.headers import AllowedHosts, SecurityHeaders, default_allowed_hosts
from api.ingest_routes import router as ingest_router
from api.key_gate import KeyGate
from api.mcp import McpRoute, mcp_sessions
from api.methods import HeadLikeGet
from api.metrics import ServiceMetrics
from api.middleware import BodyLimit, CountRequests
from api.openai_routes import router as openai_router
from api.openapi import install_contract, route_statuses
from api.playground import router as playground_router
from api.routes import router
from rag.ask import (
    AnswerCache,
    Answerer,
    CachedAnswers,
    DirectChat,
    EngineTokenCounter,
    HistoryLimits,
    LocalTokenCounter,
    PromptBudget,
    QueryRewriter,
    Reranker,
    Retriever,
    TokenCounter,
)
from rag.config import Settings
from rag.embed import QueryBatcher, SparseEncoder, TextEmbedder, embedder_from
from rag.engine import (
    EngineClient,
    EnginePool,
    EngineProcess,
    EngineSupervisor,
    engine_key,
    local_engine_config,
)
from rag.guard import (
    NOT_LEARNED,
    AdmissionController,
    CapacityShare,
    KeyStore,
    KeyStoreError,
    RateLimiter,
    ServiceRecord,
    SharedKeyStore,
    SharedRateLimiter,
    keys_path,
    learn_capacity,
    listen_url,
    remove_record,
    write_record,
)
from rag.indexes import IndexSpec
from rag.ingest import IndexSyncs, JobRunner
from rag.shared import IndexGenerations, ReplicaCount, SharedState, SharedStateDown
from rag.store import open_store

log = logging.getLogger("rag.api")


def _embedder_for(settings: Settings, store_meta_model: str | None) -> TextEmbedder:
    """The embedder the default index was built with (the index's record wins over settings)."""
    spec = IndexSpec.load(settings.index, settings.indexes_dir, settings.embed_model)
    return embedder_from(settings.embed_options(), store_meta_model or spec.embed_model)


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank_model:
        return None
    from rag.ask import CrossEncoderReranker

    return CrossEncoderReranker(settings.rerank_model)


def _admission(settings: Settings, metrics: ServiceMetrics) -> AdmissionController:
    """Admission control; its capacity is learned each time the engine becomes ready."""
    controller = AdmissionController(
        NOT_LEARNED,
        queue_size=settings.admission_queue_size,
        short_tokens=settings.admission_short_tokens,
        aging_s=settings.admission_aging_s,
        long_share=settings.admission_long_share,
        timeout_s=settings.request_timeout_s,
        max_timeout_s=settings.max_request_timeout_s,
        observe_wait=metrics.observe_admission_wait,
        count_rejection=metrics.count_rejection,
    )
    metrics.track_admission(controller)
    return controller


def _supervisor(
    engine: EngineClient,
    process: EngineProcess | None,
    settings: Settings,
    metrics: ServiceMetrics,
    capacity: CapacityShare | None = None,
    pool: EnginePool | None = None,
) -> EngineSupervisor:
    async def on_ready() -> None:  # a restart may change the model and its cache
        await engine.model_info(refresh=True)
        if capacity is not None:
            kv, seqs = settings.engine_kv_tokens, settings.engine_max_seqs
            learned = await learn_capacity(engine, kv_tokens=kv, max_seqs=seqs, pool=pool)
            capacity.learned(learned)

    return EngineSupervisor(
        engine.health,
        process,
        start_timeout=settings.engine_start_timeout,
        on_restart=metrics.engine_restarts.inc,
        on_ready=on_ready,
    )


def _shared_state(settings: Settings, metrics: ServiceMetrics) -> SharedState | None:
    """Redis for the state API replicas share (RAG_REDIS_URL), or None: this replica alone."""
    if not settings.redis_url:
        return None
    metrics.shared_state_up.set(1)
    return SharedState(settings.redis_url, on_change=metrics.shared_state_changed)


async def _access(settings: Settings, shared: SharedState | None) -> Access:
    """Keys and rate limits: this replica's own, or shared through Redis."""
    rps, tpm = settings.rate_limit_rps, settings.rate_limit_tokens_per_minute
    if shared is None:
        keys, limiter = KeyStore(keys_path(settings)), RateLimiter(rps, tpm)
    else:
        keys = SharedKeyStore(shared, keys_path(settings))
        try:
            await asyncio.to_thread(keys.import_file)
        except KeyStoreError as exc:  # Redis away: keyed requests get 503 until it is back
            log.warning("keys: %s", exc)
        limiter = SharedRateLimiter(shared, rps, tpm)
    return Access(keys, limiter, settings.auth, settings.metrics_public)


def _answer_salt(settings: Settings) -> str:
    """What else an answer depends on: cached answers of other settings are not served."""
    from importlib.metadata import version

    fields = [
        "passage_order",
        "retrieval_mode",
        "hybrid_fusion",
        "rerank_model",
        "rerank_candidates",
        "llm_max_model_len",
        "history_max_turns",
        "history_max_chars",
        "llm_repetition_penalty",
    ]
    return json.dumps([version("rag-service"), [getattr(settings, f) for f in fields]])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        engine_process: EngineProcess | None = None
        url, api_key = settings.llm_url, settings.llm_api_key
        tokenizer = settings.llm_tokenizer
        if url is None:
            # A key only this process knows: other local users cannot use the engine's port.
            api_key = engine_key()
            config = await asyncio.to_thread(local_engine_config, settings, api_key=api_key)
            engine_process = EngineProcess(config, settings.data_dir / "logs" / "engine.log")
            engine_process.start()  # in the main thread: the child dies with this process
            stack.callback(engine_process.stop)  # the whole group, after a crash too
            url = config.url
            if Path(config.model).is_dir():
                tokenizer = config.model  # the served folder: count in-process
            log.info(
                "started engine %s (pid %s) at %s", config.served_name, engine_process.pid, url
            )
        store = open_store(settings)
        stack.callback(store.close)
        meta = await asyncio.to_thread(store.get_meta, settings.index)
        embedder = await asyncio.to_thread(
            _embedder_for, settings, meta.embed_model if meta else None
        )
        stack.callback(embedder.close)
        engine = EngineClient(
            url,
            model=settings.llm_model,
            api_key=api_key,
            timeout=settings.llm_timeout,
            repetition_penalty=settings.llm_repetition_penalty,
        )
        stack.push_async_callback(engine.aclose)
        metrics = ServiceMetrics()
        metrics.prepare_requests(route_statuses(app.routes))
        admission = _admission(settings, metrics)
        capacity = CapacityShare(admission.resize)
        shared = _shared_state(settings, metrics)
        if shared is not None:
            stack.push_async_callback(shared.aclose)

            def replicas_alive(count: int) -> None:
                metrics.api_replicas.set(count)
                capacity.replicas_alive(count)

            # Each replica admits its share of the engine: beat before the engine is learned.
            replicas = ReplicaCount(shared, replicas_alive)
            with contextlib.suppress(SharedStateDown):
                await replicas.beat()
            replicas.start()
            stack.push_async_callback(replicas.aclose)
        pool: EnginePool | None = None
        if settings.engine_metrics_urls:  # replicas behind a router: each one's /metrics
            pool = EnginePool(settings.engine_metrics_urls, api_key=api_key)
            stack.push_async_callback(pool.aclose)
            metrics.track_pool(pool)
        supervisor = _supervisor(engine, engine_process, settings, metrics, capacity, pool)
        if engine_process is None:
            await supervisor.probe_once()  # an external engine that is up serves at once
        supervisor.start()
        stack.push_async_callback(supervisor.aclose)  # stopped before the engine is
        if pool is not None:  # a replica that stops or comes back changes the capacity
            watching = asyncio.create_task(pool.watch(supervisor.relearn))
            stack.callback(watching.cancel)
        queries = QueryBatcher(embedder.encode, max_batch=settings.embed_batch_size)
        stack.push_async_callback(asyncio.to_thread, queries.close)  # before the embedder
        retriever = Retriever(
            store,
            embedder,
            SparseEncoder(),
            queries=queries,
            mode=settings.retrieval_mode,
            reranker=_reranker(settings),
            rerank_candidates=settings.rerank_candidates,
            fusion=settings.hybrid_fusion,
            query_cache_size=settings.query_cache_size,
        )
        counter: TokenCounter = (
            await asyncio.to_thread(LocalTokenCounter, tokenizer)
            if tokenizer
            else EngineTokenCounter(engine)
        )
        budget = PromptBudget(engine, counter, max_model_len=settings.llm_max_model_len)
        answerer = Answerer(
            retriever,
            budget,
            engine,
            passage_order=settings.passage_order,
            admission=admission,
            rewriter=QueryRewriter(
                engine, timeout_s=settings.rewrite_timeout_s, neutraliser=budget.neutraliser
            ),
            history_limits=HistoryLimits(settings.history_max_turns, settings.history_max_chars),
        )
        if settings.prompt_warm_passages:
            warming = asyncio.create_task(
                answerer.budget.warm(store, settings.index, settings.prompt_warm_passages)
            )
            stack.callback(warming.cancel)
        app.state.access = await _access(settings, shared)
        generations = IndexGenerations(shared) if shared is not None else None
        answers = None
        if settings.answer_cache and shared is not None and generations is not None:
            cache = AnswerCache(
                shared, generations, ttl_s=settings.answer_cache_ttl_s, salt=_answer_salt(settings)
            )
            answers = CachedAnswers(answerer, cache)
        app.state.services = Services(
            settings=settings,
            store=store,
            engine=engine,
            answerer=answerer,
            direct=DirectChat(answerer),
            metrics=metrics,
            supervisor=supervisor,
            engine_process=engine_process,
            answers=answers,
        )
        # Ingestion jobs write through this process's store; stopped before it closes.
        syncs = IndexSyncs(settings, store, embedder)
        stack.callback(syncs.close)
        jobs = JobRunner(
            store,
            syncs,
            max_file_bytes=int(settings.max_file_mb * 1_000_000),
            on_change=generations.bump if generations is not None else None,
        )
        stack.push_async_callback(asyncio.to_thread, jobs.close)
        app.state.services.jobs = jobs
        # rag-api on the embedded store: tell rag-ingest where this data dir is served (with a
        # Qdrant server, rag-ingest's own store is not the one served: nothing to hand off).
        if app.state.announce and settings.qdrant_url is None:
            record: ServiceRecord = write_record(
                settings.data_dir, listen_url(settings.api_host, settings.api_port)
            )
            stack.callback(remove_record, settings.data_dir, record)
            app.state.services.record = record
        # The MCP server's tool calls use all of the above: started last, so stopped first.
        app.state.mcp_sessions = mcp_sessions()
        await stack.enter_async_context(app.state.mcp_sessions.run())
        # Everything built so far lives as long as the service: out of the collector's sight,
        # a full collection (triggered by a long-context ask's thousands of passages) no longer
        # walks the models' millions of objects while holding the event loop (~300 ms seen).
        gc.freeze()
        yield


def create_app(settings: Settings, *, announce: bool = False) -> FastAPI:
    """``announce``: record where the service listens in the data dir (rag-api does)."""
    app = FastAPI(
        title="rag-service",
        summary="Questions answered from your documents, with citations.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: see api/docs_page.py
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.announce = announce
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(openai_router)
    app.include_router(ingest_router)
    app.include_router(playground_router)  # `/`: the page only, no key needed
    if settings.api_docs:
        app.include_router(docs_router)  # `/docs`: Swagger UI from the package, no key needed
    app.router.routes.append(McpRoute())  # the MCP server (api/mcp.py)
    upload_bytes = int(settings.max_file_mb * 1_000_000) + 65536  # with the multipart framing
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        upload_max_bytes=upload_bytes,
        chat_max_bytes=settings.chat_max_request_bytes,
    )
    app.add_middleware(KeyGate)  # the key checked when a route first reads its body, first
    app.add_middleware(CountRequests)  # counts the 401s of KeyGate and 413s of BodyLimit too
    app.add_middleware(HeadLikeGet)  # copies the scope: outside CountRequests, which reads it
    hosts = settings.allowed_hosts or default_allowed_hosts(settings.api_host)
    app.add_middleware(AllowedHosts, hosts=hosts)
    app.add_middleware(SecurityHeaders)  # outermost: on every response, 400s of the Host too
    install_contract(app)
    return app
