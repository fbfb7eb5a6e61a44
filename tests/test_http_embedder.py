"""Embedding through an OpenAI-compatible /v1/embeddings service (rag/embed/http.py): vLLM's
CPU build serving MiniLM with the pooling runner, started once for the session (or the one
``RAG_TEST_EMBED_URL`` names). Its vectors equal sentence-transformers', an index built through
it answers, and a service serving another model is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag.embed import Embedder, EmbedServiceError, HttpEmbedder, resolve_model
from tests.documents import write_corpus
from tests.service import free_port

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ENGINE_PYTHON = Path(__file__).resolve().parents[1] / ".venv-engine" / "bin" / "python"
BIN = Path(sys.executable).parent

TEXTS = [
    "What is the capital of France?",
    "Why?",
    "",
    "Net sales increased 8% compared to the same quarter a year ago, driven by services.",
    "Ünïcödé, accents, emoji 🚀 and 数据 in one line — with a dash.",
    "def encode(texts: list[str]) -> Vectors:  # code, too",
    "Risk factors: the Company's operations and performance depend significantly on global "
    "and regional economic conditions.",
    " ".join(f"Paragraph {i}: supply chain constraints affected gross margin." for i in range(80)),
]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedding server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the embedding server did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def embed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM (CPU build) serving MiniLM on its pooling runner, for the whole session."""
    shared = os.environ.get("RAG_TEST_EMBED_URL")
    if shared:
        yield shared.rstrip("/")
        return
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"needs vLLM's virtualenv at {ENGINE_PYTHON.parent.parent} (make install)")
    port = free_port()
    log = tmp_path_factory.mktemp("embed-server") / "vllm.log"
    command = [
        str(ENGINE_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
        "--model", resolve_model(MODEL), "--served-model-name", MODEL,
        "--runner", "pooling", "--max-model-len", "256",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its engine-core child
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def http_embedder(embed_url: str) -> Iterator[HttpEmbedder]:
    embedder = HttpEmbedder(embed_url, MODEL, batch_size=3)
    yield embedder
    embedder.close()


def test_vectors_equal_sentence_transformers(
    http_embedder: HttpEmbedder, embedder: Embedder
) -> None:
    served = http_embedder.encode(TEXTS)  # batch_size 3: several requests, put back in order
    local = embedder.encode(TEXTS)
    assert served.dtype == np.float32
    assert served.shape == local.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(served * local, axis=1)
    assert cosines.min() >= 0.999, cosines
    question = http_embedder.encode_query(TEXTS[0])
    assert float(question @ local[0]) >= 0.999


def test_it_describes_the_model_as_the_in_process_embedder_does(
    http_embedder: HttpEmbedder, embedder: Embedder
) -> None:
    assert http_embedder.model_id == embedder.model_id == MODEL
    assert (http_embedder.dim, http_embedder.max_tokens) == (embedder.dim, embedder.max_tokens)
    assert http_embedder.encode([]).shape == (0, 384)


def test_a_service_serving_another_model_is_refused(embed_url: str) -> None:
    embedder = HttpEmbedder(embed_url, "BAAI/bge-small-en-v1.5")  # nothing asked yet
    with pytest.raises(EmbedServiceError, match="--served-model-name BAAI/bge-small-en-v1.5"):
        embedder.encode_query("Which model answers?")


def test_an_unreachable_service_is_a_clear_error() -> None:
    embedder = HttpEmbedder(f"http://127.0.0.1:{free_port()}/v1", MODEL, timeout=2)
    with pytest.raises(EmbedServiceError, match="embedding service at http://127.0.0.1"):
        embedder.encode(["Is anyone there?"])


def test_ingest_and_ask_through_the_embedding_service(
    embed_url: str, engine_url: str, embedder: Embedder, tmp_path: Path
) -> None:
    from api.app import create_app
    from rag.ask import Retriever
    from rag.config import Settings
    from rag.embed import SparseEncoder
    from rag.store import EdgeStore
    from tests.service import RunningService

    docs, data = tmp_path / "docs", tmp_path / "data"
    write_corpus(docs)
    env = {**os.environ, "RAG_DATA_DIR": str(data), "RAG_EMBED_URL": embed_url}
    env["HF_HUB_OFFLINE"] = "1"
    ingest = subprocess.run(
        [str(BIN / "rag-ingest"), str(docs), "--json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["added"] == 5

    store = EdgeStore(data)
    try:  # the index records the model, and in-process question vectors find its passages
        meta = store.get_meta("default")
        assert meta is not None
        assert meta.embed_model == MODEL
        found = Retriever(store, embedder, SparseEncoder(), mode="dense").retrieve(
            "default", "How long do I have to submit receipts?", 1
        )
        assert "receipts" in found.hits[0].payload["text"]
    finally:
        store.close()

    settings = Settings(data_dir=data, embed_url=embed_url, llm_url=engine_url, llm_timeout=60)
    with RunningService(create_app(settings)) as running, running.client() as client:
        retriever = running.app.state.services.answerer.retriever
        assert isinstance(retriever.embedder, HttpEmbedder)
        response = client.post(
            "/ask", json={"question": "How long do I have to submit receipts?", "max_tokens": 8}
        )
    assert response.status_code == 200, response.text
    citations = response.json()["citations"]
    assert any("receipts" in c["text"] for c in citations), citations
