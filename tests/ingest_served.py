"""The real `rag-api` that test_ingest_jobs.py ingests through, and the helpers its tests
share: a client with a key or the local token, `rag-ingest` against its data dir, a curl upload,
waiting for a job, the sources an ask cites."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.embed import Embedder
from rag.guard import KeyStore
from rag.guard.service_record import TOKEN_HEADER, read_record, record_path
from tests.service import index_corpus, start_api

RAG_INGEST = Path(sys.executable).parent / "rag-ingest"
HARBOUR = (
    "# Harbour levy\n\nThe Quillmore harbour levy is 7,431 florins per vessel, paid each spring "
    "to the harbour master of Quillmore.\n"
)
LIGHTHOUSE = (
    "# Lighthouse keeping\n\nThe Brackenfold lighthouse lamp is trimmed every 19 minutes by the "
    "keeper on duty, who logs each trim in the blue ledger.\n"
)


@dataclass
class Served:
    url: str
    data_dir: Path
    base: Path

    def client(self, key: str | None = None, *, local: bool = False) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if local:
            record = read_record(self.data_dir)
            assert record is not None
            headers[TOKEN_HEADER] = record.token
        return httpx.Client(base_url=self.url, headers=headers, timeout=300)


def serve(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[Served]:
    """A `rag-api` on a fresh data dir with ``<base>/roots`` as its ingest roots, until closed."""
    base = tmp_path_factory.mktemp("serving")
    data_dir = index_corpus(base, embedder)
    (base / "roots").mkdir()
    api, url = start_api(
        base,
        RAG_LLM_URL=engine_url,
        RAG_LLM_TIMEOUT="120",
        RAG_INGEST_WORKERS="1",
        RAG_INGEST_ROOTS=str(base / "roots"),
    )
    try:
        deadline = time.monotonic() + 300
        while not record_path(data_dir).exists():
            assert api.poll() is None, (base / "api.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "rag-api did not come up"
            time.sleep(0.5)
        yield Served(url, data_dir, base)
    finally:
        api.terminate()
        api.wait(timeout=120)
    assert not record_path(data_dir).exists(), "the service record outlived the service"


def rag_ingest(
    served: Served, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAG_QDRANT_URL", "RAG_API_KEY")}
    env.update(RAG_DATA_DIR=str(served.data_dir), HF_HUB_OFFLINE="1")
    if key:
        env["RAG_API_KEY"] = key
    return subprocess.run(
        [str(RAG_INGEST), *args], env=env, capture_output=True, text=True, timeout=300
    )


def one_document(folder: Path, name: str, text: str) -> Path:
    """``folder`` (made) holding the one file ``name``."""
    folder.mkdir(parents=True)
    (folder / name).write_text(text)
    return folder


def wait_job(client: httpx.Client, location: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
        time.sleep(0.3)


def cited(served: Served, question: str, key: str | None = None) -> list[str]:
    with served.client(key) as client:
        response = client.post("/ask", json={"question": question, "max_tokens": 8})
    assert response.status_code == 200, response.text
    return [c["source"] for c in response.json()["citations"]]


def upload(
    served: Served, path: Path, *extra: str, key: str | None = None
) -> tuple[int, dict[str, str], str]:
    """POST the file with the real curl (with ``key``, if any); returns status, headers, body."""
    url = f"{served.url}/v1/indexes/default/documents"
    auth = ["-H", f"Authorization: Bearer {key}"] if key else []
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "-F", f"files=@{path}", *auth, *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    head, _, body = out.partition("\n\n")
    while head.split()[1] == "100":  # curl's "100 Continue" comes first
        head, _, body = body.partition("\n\n")
    status = int(head.split()[1])
    headers = {}
    for line in head.splitlines()[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def service_keys(served: Served) -> Iterator[dict[str, str]]:
    """Keys in the running service's key file; revoked afterwards, and the file removed: keyless
    again (revoking the last key alone leaves the service closed)."""
    store = KeyStore(served.data_dir / "keys.json")
    made = {
        "reader": store.create("reader", ["default"]),
        "writer": store.create("writer", ["default"], write=True),
        "elsewhere": store.create("elsewhere", ["other"], write=True),
    }
    yield made
    for name in made:
        store.revoke(name)
    store.path.unlink()
