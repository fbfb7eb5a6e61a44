"""Dependencies: one-line accessors of what `lifespan` built, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.metrics import ServiceMetrics
from rag.ask import Answerer, Answers, DirectChat
from rag.config import Settings
from rag.engine import EngineClient, EngineProcess, EngineSupervisor
from rag.guard import ServiceRecord
from rag.ingest import JobRunner
from rag.store import VectorStore


@dataclass
class Services:
    settings: Settings
    store: VectorStore
    engine: EngineClient
    answerer: Answerer
    direct: DirectChat  # the engine's own model, and chat UIs' task prompts
    metrics: ServiceMetrics
    supervisor: EngineSupervisor
    engine_process: EngineProcess | None = None
    jobs: JobRunner | None = None  # ingestion over HTTP (api/ingest_routes.py)
    record: ServiceRecord | None = None  # <data_dir>/service.json, when rag-api announced itself
    answers: Answers | None = None  # the answerer through the answer cache; None: answerer

    def asker(self) -> Answers:
        """What answers asks: through the answer cache (RAG_ANSWER_CACHE), or the answerer."""
        return self.answers or self.answerer


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
