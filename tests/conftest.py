"""Fixtures: the real MiniLM embedder, both real store adapters, documents made on the spot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rag.embed import Embedder
from rag.engine import EngineProcess
from rag.store import VectorStore

if TYPE_CHECKING:
    from tests.service import RunningService

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEC_DIR = SHARED_DATA / "sec-10q"
SCIFACT_DIR = SHARED_DATA / "scifact"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data set at {path} (present only on the team's machines)")
    return path


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """The commands set a private umask (rag.store.keep_files_private); one invoked in-process
    (click's CliRunner) must not leave it to the tests after it."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Embedder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(params=["edge", "server-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """Each store test runs against Qdrant Edge and qdrant-client (local mode)."""
    opened: VectorStore
    if request.param == "edge":
        from rag.store import EdgeStore

        opened = EdgeStore(tmp_path / "edge")
    else:
        from qdrant_client import QdrantClient

        from rag.store.server import ServerStore

        opened = ServerStore(QdrantClient(path=str(tmp_path / "qdrant-local")))
    yield opened
    opened.close()


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[VectorStore]:
    from rag.store import EdgeStore

    opened = EdgeStore(tmp_path / "edge")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """The real vLLM engine (CPU build, SmolLM2), started once for the whole session."""
    if os.environ.get("RAG_TEST_ENGINE_URL"):
        pytest.skip("stops or watches the session's own engine: unset RAG_TEST_ENGINE_URL")
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
def engine_url(request: pytest.FixtureRequest) -> str:
    """The session's engine; ``RAG_TEST_ENGINE_URL`` names one of the same kind already running
    (working copies on one small machine share an engine that way)."""
    shared = os.environ.get("RAG_TEST_ENGINE_URL")
    if shared:
        return shared.rstrip("/")
    engine: EngineProcess = request.getfixturevalue("engine")
    return engine.url


@pytest.fixture(scope="session")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    """The ask tests' index "docs" (mixed corpus, catalogue, a filing when the shared data is
    here) and "whole" (one passage larger than half the CPU engine's window)."""
    from rag.indexes import ChunkingSpec, IndexSpec
    from rag.ingest import FolderSync
    from rag.store import EdgeStore
    from tests.asking import write_catalogue
    from tests.documents import write_corpus

    base = tmp_path_factory.mktemp("ask")
    docs = base / "docs"
    write_corpus(docs)
    write_catalogue(docs / "catalogue" / "products.md")
    sec = SEC_DIR / "2023 Q3 AAPL.pdf"
    if sec.exists():
        (docs / "filings").mkdir()
        shutil.copy(sec, docs / "filings" / sec.name)
    store = EdgeStore(base / "data")
    try:
        FolderSync(store, embedder, IndexSpec(name="docs")).run([docs])
        long = base / "long" / "notes.txt"
        long.parent.mkdir()
        long.write_text(" ".join(f"Note {k}: the kettle ships on day {k}." for k in range(900)))
        whole = IndexSpec(name="whole", chunking=ChunkingSpec(mode="document"))
        FolderSync(store, embedder, whole).run([long.parent])  # one passage of ~11K tokens
        located = {(p["source"], p["page"]) for _, p in store.scan("docs", ["source", "page"])}
    finally:
        store.close()
    return {"data_dir": base / "data", "located": located}


@pytest.fixture(scope="session")
def service(indexed: dict[str, Any], engine_url: str) -> Iterator[RunningService]:
    """The service over the real engine and the ask tests' index, shared by their modules."""
    from api.app import create_app
    from rag.config import Settings
    from tests.service import RunningService

    settings = Settings(
        data_dir=indexed["data_dir"], index="docs", llm_url=engine_url, llm_timeout=60
    )
    with RunningService(create_app(settings)) as running:
        yield running
