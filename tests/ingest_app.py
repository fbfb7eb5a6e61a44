"""The service's ingestion routes without an engine: `create_app` on a fresh data dir, served by
a real uvicorn in a thread, with a write key and an admin key; and waiting for its jobs.

Uploads, syncs and deletions never reach the engine, so these tests need none: the settings
point `RAG_LLM_URL` at a closed port (asks would get 503 engine_unavailable).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from rag.config import Settings
from rag.guard import KeyStore
from tests.ingest_served import wait_job
from tests.service import RunningService

NO_ENGINE = "http://127.0.0.1:9"
__all__ = ["NO_ENGINE", "IngestApp", "ingest_app", "upload", "wait_job"]


@dataclass
class IngestApp:
    running: RunningService
    data_dir: Path
    writer: str  # may write index "default"
    admin: str

    def client(self, key: str | None = None) -> httpx.Client:
        client = self.running.client()
        client.headers["Authorization"] = f"Bearer {key or self.writer}"
        return client

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads" / "default"


@contextmanager
def ingest_app(data_dir: Path, **settings: Any) -> Iterator[IngestApp]:
    keys = KeyStore(data_dir / "keys.json")
    # Rates these tests do not test: a test's uploads, polls and deletes come faster than the
    # default 10 a second on a fast machine, and the next test would start with a spent bucket.
    writer = keys.create("writer", ["default"], write=True, rps=1000)
    admin = keys.create("ops", all_indexes=True, admin=True, rps=1000)
    app = create_app(Settings(data_dir=data_dir, llm_url=NO_ENGINE, **settings))
    with RunningService(app) as running:
        yield IngestApp(running, data_dir, writer, admin)


def upload(app: IngestApp, *files: tuple[str, bytes]) -> httpx.Response:
    with app.client() as client:
        return client.post(
            "/v1/indexes/default/documents", files=[("files", file) for file in files]
        )
