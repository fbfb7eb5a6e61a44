"""Fixtures: the real MiniLM embedder, both real store adapters, documents made on the spot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.embedding import Embedder
from rag.engine import EngineProcess
from rag.store.base import VectorStore

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEC_DIR = SHARED_DATA / "sec-10q"
SCIFACT_DIR = SHARED_DATA / "scifact"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data set at {path} (present only on the team's machines)")
    return path


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Embedder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(params=["edge", "server-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """Each store test runs against Qdrant Edge and qdrant-client (local mode)."""
    opened: VectorStore
    if request.param == "edge":
        from rag.store.edge import EdgeStore

        opened = EdgeStore(tmp_path / "edge")
    else:
        from qdrant_client import QdrantClient

        from rag.store.server import ServerStore

        opened = ServerStore(QdrantClient(path=str(tmp_path / "qdrant-local")))
    yield opened
    opened.close()


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[VectorStore]:
    from rag.store.edge import EdgeStore

    opened = EdgeStore(tmp_path / "edge")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """The real vLLM engine (CPU build, SmolLM2), started once for the whole session."""
    from rag.config import Settings
    from rag.engine import local_engine_config
    from tests.service import free_port

    settings = Settings(engine_port=free_port())
    process = EngineProcess(
        local_engine_config(settings), tmp_path_factory.mktemp("engine") / "engine.log"
    )
    process.start()
    try:
        process.wait_ready(timeout=900)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def engine_url(engine: EngineProcess) -> str:
    return engine.url
