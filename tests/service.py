"""A real uvicorn server on a free port, in a thread whose event loop tests can borrow; and
`rag-api` as a real process with the engine it manages."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import uvicorn
from fastapi import FastAPI

from api.server import server_options
from rag.config import Settings
from rag.embed import Embedder, SparseEncoder
from rag.indexes import ChunkingSpec, IndexMeta, IndexSpec
from rag.ingest import FolderSync
from rag.store import EdgeStore, StoredChunk, path_prefixes
from tests.documents import write_corpus

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningService:
    """The app served as `rag-api` serves it (api/server.py's options), on a free port."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = getattr(app.state, "settings", None) or Settings()  # a bare app: defaults
        options = {**server_options(settings), "host": "127.0.0.1", "port": self.port}
        config = uvicorn.Config(app, **options, log_level="warning")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )

    def __enter__(self) -> RunningService:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's own loop (where its clients live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=300)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300)


def start_api(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`rag-api` with its own engine and embedded store under ``tmp_path``; returns its URL."""
    port, engine_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("RAG_LLM_URL", "RAG_QDRANT_URL")}
    environ.update(
        RAG_DATA_DIR=str(tmp_path / "data"),
        RAG_API_PORT=str(port),
        RAG_ENGINE_PORT=str(engine_port),
        HF_HUB_OFFLINE="1",
    )
    environ.update(env)
    port = int(environ["RAG_API_PORT"])
    log = (tmp_path / "api.log").open("ab")
    rag_api = Path(sys.executable).parent / "rag-api"
    api = subprocess.Popen([str(rag_api)], env=environ, stdout=log, stderr=log)
    return api, f"http://127.0.0.1:{port}"


def engine_processes(api: subprocess.Popen[bytes], timeout: float = 120) -> list[psutil.Process]:
    """The engine's processes (server and workers) once rag-api has spawned them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(api.pid).children(recursive=True)
        servers = [p for p in children if "vllm.entrypoints" in " ".join(p.cmdline())]
        if servers:
            time.sleep(5)  # let it spawn its engine-core worker too
            return [servers[0], *servers[0].children(recursive=True)]
        time.sleep(0.5)
    raise AssertionError("rag-api did not start an engine")


def index_corpus(base: Path, embedder: Embedder, index: str = "default") -> Path:
    """The small mixed corpus under ``base/docs``, indexed into the embedded store at
    ``base/data`` (closed again: a service may open it). Returns the data folder."""
    write_corpus(base / "docs")
    store = EdgeStore(base / "data")
    try:
        FolderSync(store, embedder, IndexSpec(name=index)).run([base / "docs"])
    finally:
        store.close()
    return base / "data"


def index_two_teams(base: Path, embedder: Embedder) -> Path:
    """The small corpus as two teams' indexes, "team-a" and "team-b", in the embedded store at
    ``base/data`` (closed again). Returns the data folder."""
    data = index_corpus(base, embedder, "team-a")
    store = EdgeStore(data)
    try:
        FolderSync(store, embedder, IndexSpec(name="team-b")).run([base / "docs"])
    finally:
        store.close()
    return data


def index_passages(
    store: EdgeStore,
    index: str,
    embedder: Embedder,
    passages: Sequence[tuple[str, str, int]],
    embedded: Sequence[str] | None = None,
) -> None:
    """A new index of ``(source, text, char_start)`` passages, stored directly: each embedded
    from its text (or from ``embedded``, when given) and sparse-encoded as sync would."""
    store.create_index(
        IndexMeta(
            name=index,
            embed_model=embedder.model_id,
            dim=embedder.dim,
            max_tokens=embedder.max_tokens,
            chunking=ChunkingSpec(),
            sparse="bm25",
            created_at="2026-11-23T00:00:00+00:00",
        )
    )
    sparse = SparseEncoder()
    vectors = embedder.encode(list(embedded or [text for _, text, _ in passages]))
    store.upsert(
        index,
        [
            StoredChunk(
                f"00000000-0000-0000-0000-{k:012d}",
                vector,
                sparse.encode_document(text),
                {
                    "source": source,
                    "dirs": path_prefixes(source),
                    "char_start": start,
                    "text": text,
                },
            )
            for k, ((source, text, start), vector) in enumerate(zip(passages, vectors, strict=True))
        ],
    )
