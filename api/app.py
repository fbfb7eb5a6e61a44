"""The FastAPI application: `create_app(settings)`; long-lived clients are built in `lifespan`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from api.auth import Access
from api.deps import Services
from api.errors import install_error_handlers
from api.metrics import ServiceMetrics
from api.middleware import BodyLimit, CountRequests
from api.openapi import install_contract
from api.routes import router
from rag.answer import Answerer
from rag.config import Settings
from rag.embedding import Embedder, embedder_from
from rag.engine import EngineProcess, local_engine_config
from rag.engine.supervisor import EngineSupervisor
from rag.indexes import IndexSpec
from rag.keys import KeyStore, keys_path
from rag.llm import EngineClient
from rag.prompt import PromptBudget
from rag.ratelimit import RateLimiter
from rag.retrieval import Reranker, Retriever
from rag.sparse import SparseEncoder
from rag.store import open_store
from rag.tokens import EngineTokenCounter, LocalTokenCounter, TokenCounter

log = logging.getLogger("rag.api")


def _embedder_for(settings: Settings, store_meta_model: str | None) -> Embedder:
    """The embedder the default index was built with (the index's record wins over settings)."""
    spec = IndexSpec.load(settings.index, settings.indexes_dir, settings.embed_model)
    return embedder_from(settings, store_meta_model or spec.embed_model)


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank_model:
        return None
    from rag.rerank import CrossEncoderReranker

    return CrossEncoderReranker(settings.rerank_model)


def _supervisor(
    engine: EngineClient, process: EngineProcess | None, settings: Settings, metrics: ServiceMetrics
) -> EngineSupervisor:
    return EngineSupervisor(
        engine.health,
        process,
        start_timeout=settings.engine_start_timeout,
        on_restart=metrics.engine_restarts.inc,
        on_ready=lambda: engine.model_info(refresh=True),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        engine_process: EngineProcess | None = None
        url = settings.llm_url
        tokenizer = settings.llm_tokenizer
        if url is None:
            config = await asyncio.to_thread(local_engine_config, settings)
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
        engine = EngineClient(
            url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout,
            repetition_penalty=settings.llm_repetition_penalty,
        )
        stack.push_async_callback(engine.aclose)
        metrics = ServiceMetrics()
        supervisor = _supervisor(engine, engine_process, settings, metrics)
        if engine_process is None:
            await supervisor.probe_once()  # an external engine that is up serves at once
        supervisor.start()
        stack.push_async_callback(supervisor.aclose)  # stopped before the engine is
        retriever = Retriever(
            store,
            embedder,
            SparseEncoder(),
            mode=settings.retrieval_mode,
            reranker=_reranker(settings),
            rerank_candidates=settings.rerank_candidates,
            fusion=settings.hybrid_fusion,
        )
        counter: TokenCounter = (
            await asyncio.to_thread(LocalTokenCounter, tokenizer)
            if tokenizer
            else EngineTokenCounter(engine)
        )
        answerer = Answerer(
            retriever, PromptBudget(engine, counter), engine, passage_order=settings.passage_order
        )
        app.state.access = Access(
            KeyStore(keys_path(settings)),
            RateLimiter(settings.rate_limit_rps, settings.rate_limit_tokens_per_minute),
            settings.auth,
            settings.metrics_public,
        )
        app.state.services = Services(
            settings=settings,
            store=store,
            engine=engine,
            answerer=answerer,
            metrics=metrics,
            supervisor=supervisor,
            engine_process=engine_process,
        )
        yield


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="rag-service",
        summary="Questions answered from your documents, with citations.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(CountRequests)  # outermost: counts the 413s of BodyLimit too
    install_contract(app)
    return app
