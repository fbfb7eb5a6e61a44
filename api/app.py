"""The FastAPI application: `create_app(settings)`; long-lived clients are built in `lifespan`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from api.deps import Services
from api.errors import install_error_handlers
from api.metrics import ServiceMetrics
from api.routes import router
from rag.answer import Answerer
from rag.config import Settings
from rag.embedding import Embedder
from rag.engine import EngineProcess, local_engine_config
from rag.indexes import IndexSpec
from rag.llm import EngineClient
from rag.prompt import PromptBudget
from rag.retrieval import Reranker, Retriever
from rag.sparse import SparseEncoder
from rag.store import open_store
from rag.tokens import EngineTokenCounter, LocalTokenCounter, TokenCounter

log = logging.getLogger("rag.api")


def _embedder_for(settings: Settings, store_meta_model: str | None) -> Embedder:
    """The embedder the default index was built with (the index's record wins over settings)."""
    spec = IndexSpec.load(settings.index, settings.indexes_dir, settings.embed_model)
    return Embedder(store_meta_model or spec.embed_model, batch_size=settings.embed_batch_size)


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank_model:
        return None
    from rag.rerank import CrossEncoderReranker

    return CrossEncoderReranker(settings.rerank_model)


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
            stack.callback(engine_process.stop)
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
        )
        stack.push_async_callback(engine.aclose)
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
        app.state.services = Services(
            settings=settings,
            store=store,
            engine=engine,
            answerer=answerer,
            metrics=ServiceMetrics(),
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

    @app.middleware("http")
    async def count_requests(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        services: Services | None = getattr(request.app.state, "services", None)
        route = request.scope.get("route")
        if services is not None and route is not None:
            services.metrics.requests.labels(route.path, str(response.status_code)).inc()
        return response

    return app
