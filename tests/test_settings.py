"""Every setting documented in docs/configuration.md's Configuration table takes effect.

The table is parsed; each `RAG_*` name in it must have a check in `CHECKS`, which sets the
variable in the environment (as an operator would), builds the service the way `rag-api` does
and looks at what the setting must change. A documented setting without a check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from api.app import _supervisor, create_app
from api.cli import limit_torch_threads
from api.metrics import ServiceMetrics
from rag.config import Settings
from rag.embed import Embedder
from rag.engine import EngineClient, kv_tokens_from_metrics, local_engine_config
from rag.guard import KeyStore
from rag.indexes import IndexSpec
from tests import ingest_checks
from tests.redis_server import NO_REDIS, RedisServer
from tests.service import RunningService, free_port, index_corpus, start_api
from tests.test_rerank import tiny_cross_encoder  # noqa: F401  (a fixture)

pytestmark = pytest.mark.engine
CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def documented_settings() -> list[str]:
    text = CONFIGURATION.read_text(encoding="utf-8")
    start = text.index("## Configuration")
    end = text.find("\n## ", start)
    table = text[start : end if end != -1 else len(text)]
    names: list[str] = []
    for line in table.splitlines():
        if line.startswith("| `RAG_"):
            names += re.findall(r"`(RAG_[A-Z0-9_]+)`", line.split("|")[1])
    return names


class World:
    """A real index, the real engine, and the service built from the environment."""

    def __init__(
        self, base: Path, engine_url: str, monkeypatch: pytest.MonkeyPatch, cross_encoder: Path
    ) -> None:
        self.base, self.engine_url, self.monkeypatch = base, engine_url, monkeypatch
        self.cross_encoder = cross_encoder
        for name in [n for n in os.environ if n.startswith("RAG_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("RAG_DATA_DIR", str(base / "data"))
        monkeypatch.setenv("RAG_LLM_URL", engine_url)

    def serve(self, **env: str) -> RunningService:
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        return RunningService(create_app(Settings()))


def _answer(running: RunningService, **body: Any) -> dict[str, Any]:
    with running.client() as client:
        response = client.post("/ask", json={"question": "What is the travel budget?", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def check_repetition_penalty(world: World) -> None:
    """The engine's greedy answer changes with the penalty the service sends."""
    messages = [{"role": "user", "content": "Count: one, two, three, four, five, six, seven"}]

    async def reply(services_engine: EngineClient) -> str:
        return (await services_engine.chat(messages, max_tokens=48, temperature=0.0)).text

    with world.serve(RAG_LLM_REPETITION_PENALTY="2.0") as strong:
        penalised = strong.call(reply(strong.app.state.services.engine))

    async def unpenalised_reply() -> str:
        plain = EngineClient(world.engine_url, repetition_penalty=1.0)
        try:
            return await reply(plain)
        finally:
            await plain.aclose()

    unpenalised = asyncio.run(unpenalised_reply())
    assert penalised != unpenalised


def check_top_k(world: World) -> None:
    with world.serve(RAG_TOP_K="2", RAG_MAX_OUTPUT_TOKENS="4") as running:
        assert len(_answer(running)["citations"]) == 2


def check_max_output_tokens(world: World) -> None:
    with world.serve(RAG_MAX_OUTPUT_TOKENS="3") as running:
        assert _answer(running)["usage"]["completion_tokens"] <= 3


def check_max_request_bytes(world: World) -> None:
    with world.serve(RAG_MAX_REQUEST_BYTES="2048") as running, running.client() as client:
        response = client.post("/v1/indexes/default/sync", json={"folders": ["x" * 3000]})
    assert response.status_code == 413
    assert "RAG_MAX_REQUEST_BYTES" in response.json()["error"]["message"]


def _chat(running: RunningService, **body: Any) -> Any:
    ask = [{"role": "user", "content": "What is the travel budget?"}]
    with running.client() as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": "rag:default", "messages": ask, "max_tokens": 4, **body},
        )


def check_chat_sources(world: World) -> None:
    with world.serve(RAG_CHAT_SOURCES="false") as running:
        content = _chat(running).json()["choices"][0]["message"]["content"]
        assert "Sources:" not in content
        asked = _chat(running, sources=True).json()["choices"][0]["message"]["content"]
        assert "\n\nSources:\n" in asked


def check_chat_max_request_bytes(world: World) -> None:
    with world.serve() as running:  # the default: 1 MiB, past RAG_MAX_REQUEST_BYTES
        assert _chat(running, tools=[{"padding": "x" * 200_000}]).status_code == 200
        with running.client() as client:
            history = [{"role": "user", "content": "x" * 200_000}]
            body = {"question": "What is the travel budget?", "history": history, "max_tokens": 4}
            assert client.post("/ask", json=body).status_code == 200
    with world.serve(RAG_CHAT_MAX_REQUEST_BYTES="2048") as running:
        refused = _chat(running, tools=[{"type": "function", "padding": "x" * 3000}])
        assert refused.status_code == 413
        assert "RAG_CHAT_MAX_REQUEST_BYTES" in refused.json()["error"]["message"]
        with running.client() as client:  # /ask's history is a conversation too
            history = [{"role": "user", "content": "x" * 3000}]
            body = {"question": "What is the travel budget?", "history": history}
            assert client.post("/ask", json=body).status_code == 413


def check_llm_timeout(world: World) -> None:
    with world.serve(RAG_LLM_TIMEOUT="0.25") as running:
        assert running.app.state.services.engine._http.timeout.read == 0.25
        with running.client() as client:  # a long answer is cut by the timeout: 504
            response = client.post(
                "/ask",
                json={"question": "List every item.", "top_k": "auto", "max_tokens": 64},
            )
    assert response.status_code in (200, 504)


def check_llm_model(world: World) -> None:
    with world.serve(RAG_LLM_MODEL="not-served") as running, running.client() as client:
        response = client.post("/ask", json={"question": "What is the travel budget?"})
    assert "not-served" in response.text


def check_index(world: World) -> None:
    with world.serve(RAG_INDEX="other") as running, running.client() as client:
        response = client.get("/readyz")
    assert response.json()["checks"]["index"] == "missing: other"


def check_data_dir(world: World) -> None:
    world.monkeypatch.setenv("RAG_DATA_DIR", str(world.base / "elsewhere"))
    with world.serve() as running, running.client() as client:
        assert client.get("/readyz").json()["checks"]["index"] == "missing: default"
    assert (world.base / "elsewhere").is_dir()


def check_passage_order(world: World) -> None:
    with world.serve(RAG_PASSAGE_ORDER="score", RAG_MAX_OUTPUT_TOKENS="4") as running:
        scores = [c["score"] for c in _answer(running, top_k=5)["citations"]]
    assert scores == sorted(scores, reverse=True)


def _retriever_check(env: str, value: str, attribute: str) -> Callable[[World], None]:
    def check(world: World) -> None:
        with world.serve(**{env: value}) as running:
            assert str(getattr(running.app.state.services.answerer.retriever, attribute)) == value
            _answer(running, max_tokens=4)  # and the service answers with it

    return check


def check_query_cache_size(world: World) -> None:
    """With no vectors kept, a repeated question is embedded again (a kept one takes ~0 ms)."""
    with world.serve(RAG_QUERY_CACHE_SIZE="0") as running:
        timings = [_answer(running, max_tokens=4)["timings"] for _ in range(2)]
        assert running.app.state.services.answerer.retriever.query_cache_size == 0
    assert timings[1]["embed_ms"] > 0.5, timings


def _follow_up(running: RunningService, history: list[tuple[str, str]]) -> dict[str, Any]:
    turns = [
        {"role": role, "content": text}
        for question, answer in history
        for role, text in (("user", question), ("assistant", answer))
    ]
    return _answer(running, max_tokens=4, history=turns)


def check_rewrite_timeout(world: World) -> None:
    """0: a follow-up is never rewritten; it is retrieved with the recent questions before it."""
    with world.serve(RAG_REWRITE_TIMEOUT_S="0") as running:
        assert running.app.state.services.answerer.rewriter.timeout_s == 0
        body = _follow_up(running, [("Where do I send receipts?", "To finance.")])
    assert body["query"] == "Where do I send receipts?\nWhat is the travel budget?"


def check_history_max_turns(world: World) -> None:
    """One exchange kept: the older question plays no part in the follow-up's query."""
    env = {"RAG_HISTORY_MAX_TURNS": "1", "RAG_REWRITE_TIMEOUT_S": "0"}
    with world.serve(**env) as running:
        body = _follow_up(running, [("Older question?", "Old."), ("Newer question?", "New.")])
    assert body["query"] == "Newer question?\nWhat is the travel budget?"


def check_history_max_chars(world: World) -> None:
    """The exchanges within 30 characters, newest first: the long older one is cut."""
    env = {"RAG_HISTORY_MAX_CHARS": "30", "RAG_REWRITE_TIMEOUT_S": "0"}
    with world.serve(**env) as running:
        body = _follow_up(running, [("Older question?", "x" * 40), ("Newer question?", "New.")])
    assert body["query"] == "Newer question?\nWhat is the travel budget?"


def check_embed_batch_size(world: World) -> None:
    with world.serve(RAG_EMBED_BATCH_SIZE="3") as running:
        assert running.app.state.services.answerer.retriever.embedder.batch_size == 3


def check_embed_model(world: World) -> None:
    world.monkeypatch.setenv("RAG_DATA_DIR", str(world.base / "empty"))
    with world.serve(RAG_EMBED_MODEL="sentence-transformers/all-MiniLM-L6-v2") as running:
        embedder = running.app.state.services.answerer.retriever.embedder
        assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"


def check_indexes_dir(world: World) -> None:
    folder = world.base / "definitions"
    folder.mkdir(exist_ok=True)
    (folder / "default.toml").write_text("[chunking]\nchunk_tokens = 77\n", encoding="utf-8")
    world.monkeypatch.setenv("RAG_INDEXES_DIR", str(folder))
    settings = Settings()
    assert IndexSpec.load("x", settings.indexes_dir, None).chunking.chunk_tokens == 77


def check_rerank_model(world: World) -> None:
    with world.serve(RAG_RERANK_MODEL=str(world.cross_encoder)) as running:
        assert _answer(running, max_tokens=4)["timings"]["rerank_ms"] > 0


def _managed_engine_check(
    env: str, value: str, expect: Callable[[Any], bool]
) -> Callable[[World], None]:
    def check(world: World) -> None:
        world.monkeypatch.setenv(env, value)
        assert expect(local_engine_config(Settings()))

    return check


def check_cache_dir(world: World) -> None:
    prepared = local_engine_config(Settings()).model
    cache = world.base / "cache"
    (cache / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models" / Path(prepared).name).symlink_to(prepared)
    world.monkeypatch.setenv("RAG_CACHE_DIR", str(cache))
    assert local_engine_config(Settings()).model.startswith(str(cache))


def check_rag_api_process(world: World) -> None:
    """RAG_API_HOST/PORT and RAG_LLM_URL reach the `rag-api` process."""
    port = free_port()
    api, _ = start_api(
        world.base,
        RAG_API_HOST="127.0.0.1",
        RAG_API_PORT=str(port),
        RAG_LLM_URL=world.engine_url,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        children = psutil.Process(api.pid).children(recursive=True)
        assert not [p for p in children if "vllm" in " ".join(p.cmdline())]  # no own engine
    finally:
        api.terminate()
        api.wait(timeout=60)


def check_torch_threads(world: World) -> None:
    """What `rag-api` does with it before torch loads."""
    world.monkeypatch.setenv("OMP_NUM_THREADS", "unset")  # restored after the test
    world.monkeypatch.setenv("RAG_TORCH_THREADS", "1")
    limit_torch_threads(Settings())
    assert os.environ["OMP_NUM_THREADS"] == "1"


def check_qdrant(world: World) -> None:
    world.monkeypatch.setenv("RAG_QDRANT_URL", "http://127.0.0.1:1")
    world.monkeypatch.setenv("RAG_QDRANT_API_KEY", "secret-key")
    from rag.store import open_store

    store = open_store(Settings())
    try:
        assert type(store).__name__ == "ServerStore"
        assert "127.0.0.1:1" in repr(vars(store.client))  # type: ignore[attr-defined]
        assert "secret-key" in repr(vars(store.client))  # type: ignore[attr-defined]
    finally:
        store.close()


def check_qdrant_sharding(world: World) -> None:
    """Both reach the request that creates a new index's collection (a scripted Qdrant: the
    cluster's server does not run here)."""
    from tests.test_deploy import created_collection

    body = created_collection(
        world.monkeypatch, RAG_QDRANT_SHARD_NUMBER="3", RAG_QDRANT_REPLICATION_FACTOR="2"
    )
    assert (body["shard_number"], body["replication_factor"]) == (3, 2)


def check_llm_api_key(world: World) -> None:
    with world.serve(RAG_LLM_API_KEY="k-123") as running:
        engine = running.app.state.services.engine
        assert engine._http.headers["authorization"] == "Bearer k-123"


def check_llm_tokenizer(world: World) -> None:
    folder = local_engine_config(Settings()).model
    with world.serve(RAG_LLM_TOKENIZER=folder) as running:
        counter = running.app.state.services.answerer.budget.counter
        assert type(counter).__name__ == "LocalTokenCounter"


def check_llm_max_model_len(world: World) -> None:
    with world.serve(RAG_LLM_MAX_MODEL_LEN="65536") as running:
        budget = running.app.state.services.answerer.budget
        assert running.call(budget.max_model_len()) == 65536


def check_prompt_warm_passages(world: World) -> None:
    with world.serve(RAG_PROMPT_WARM_PASSAGES="3") as running:
        budget = running.app.state.services.answerer.budget
        deadline = time.monotonic() + 60
        while budget.counted < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert budget.counted == 3


def check_engine_start_timeout(world: World) -> None:
    world.monkeypatch.setenv("RAG_ENGINE_START_TIMEOUT", "7")
    client = EngineClient(world.engine_url)
    try:
        supervisor = _supervisor(client, None, Settings(), ServiceMetrics())
        assert supervisor.start_timeout == 7
    finally:
        asyncio.run(client.aclose())


def _on_a_gpu_machine(world: World) -> None:
    """The engine's interpreter has GPU vLLM (the `vllm` distribution): a stand-in answers the
    probe for it."""
    python = world.base / "gpu-python"
    python.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    python.chmod(0o755)
    world.monkeypatch.setenv("RAG_ENGINE_PYTHON", str(python))


def check_gpu_memory_utilization(world: World) -> None:
    _on_a_gpu_machine(world)
    world.monkeypatch.setenv("RAG_ENGINE_GPU_MEMORY_UTILIZATION", "0.5")
    command = local_engine_config(Settings()).command()
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.5"


def check_long_prefill_tokens(world: World) -> None:
    """0 leaves vLLM's default (no cap)."""
    _on_a_gpu_machine(world)
    world.monkeypatch.setenv("RAG_ENGINE_LONG_PREFILL_TOKENS", "2048")
    command = local_engine_config(Settings()).command()
    assert command[command.index("--long-prefill-token-threshold") + 1] == "2048"
    world.monkeypatch.setenv("RAG_ENGINE_LONG_PREFILL_TOKENS", "0")
    assert "--long-prefill-token-threshold" not in local_engine_config(Settings()).command()


def _ingest_check(check: Callable[[Path], None]) -> Callable[[World], None]:
    """An ingest setting: rag-ingest runs with it (the world's fixture works in tmp_path)."""
    return lambda world: check(Path.cwd())


def check_embed_backend(world: World) -> None:
    with world.serve(RAG_EMBED_BACKEND="onnx") as running:
        embedder = running.app.state.services.answerer.retriever.embedder
        assert embedder.backend == "onnx"
        assert (embedder.model_dir / "model.onnx").is_file()
        _answer(running, max_tokens=4)


def check_embed_device(world: World) -> None:
    import torch

    from rag.embed import embedder_from
    from rag.errors import RagError

    with world.serve(RAG_EMBED_DEVICE="cpu", RAG_EMBED_BACKEND="torch") as running:
        embedder = running.app.state.services.answerer.retriever.embedder
        assert embedder._model.device.type == "cpu"
    world.monkeypatch.setenv("RAG_EMBED_DEVICE", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RagError, match="no CUDA device"):
            embedder_from(Settings().embed_options(), "sentence-transformers/all-MiniLM-L6-v2")
        return
    with world.serve() as running:  # a GPU runs torch, whatever the CPU backend setting
        embedder = running.app.state.services.answerer.retriever.embedder
        assert (embedder._model.device.type, embedder.backend) == ("cuda", "torch")


def check_embed_url(world: World) -> None:
    """The service embeds through the URL: the chat engine there serves no MiniLM, and the
    embedder says so (tests/test_http_embedder.py asks through a real embedding server)."""
    from rag.embed import EmbedServiceError

    with world.serve(RAG_EMBED_URL=world.engine_url) as running:
        embedder = running.app.state.services.answerer.retriever.embedder
        assert embedder.url == world.engine_url.rstrip("/") + "/v1"
        with pytest.raises(EmbedServiceError, match="not 'sentence-transformers/all-MiniLM-L6-v2'"):
            embedder.encode_query("What is the travel budget?")


def check_embed_api_key(world: World) -> None:
    with world.serve(RAG_EMBED_URL=world.engine_url, RAG_EMBED_API_KEY="k-embed") as running:
        embedder = running.app.state.services.answerer.retriever.embedder
        assert embedder._client.headers["authorization"] == "Bearer k-embed"


def _keys_file(**limits: Any) -> tuple[Path, str]:
    path = Path.cwd() / "keys.json"
    return path, KeyStore(path).create("team", all_indexes=True, **limits)


def check_auth(world: World) -> None:
    with world.serve(RAG_AUTH="required") as running, running.client() as client:
        response = client.post("/ask", json={"question": "What is the travel budget?"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def check_keys_file(world: World) -> None:
    path, key = _keys_file()
    with world.serve(RAG_KEYS_FILE=str(path)) as running, running.client() as client:
        body = {"question": "What is the travel budget?", "max_tokens": 4}
        assert client.post("/ask", json=body).status_code == 401
        keyed = client.post("/ask", json=body, headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200, keyed.text


def check_metrics_public(world: World) -> None:
    path, _ = _keys_file()
    with world.serve(RAG_KEYS_FILE=str(path)) as closed, closed.client() as client:
        assert client.get("/metrics").status_code == 401
    with (
        world.serve(RAG_KEYS_FILE=str(path), RAG_METRICS_PUBLIC="true") as running,
        running.client() as client,
    ):
        assert client.get("/metrics").status_code == 200


def check_rate_limit_rps(world: World) -> None:
    path, key = _keys_file()
    with (
        world.serve(RAG_KEYS_FILE=str(path), RAG_RATE_LIMIT_RPS="0.05") as running,
        running.client() as client,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        body = {"question": "What is the travel budget?", "index": "absent"}
        assert client.post("/ask", json=body, headers=headers).status_code == 404
        over = client.post("/ask", json=body, headers=headers)
        assert over.status_code == 429
        assert int(over.headers["retry-after"]) >= 1


def check_rate_limit_tokens(world: World) -> None:
    path, key = _keys_file()
    with (
        world.serve(RAG_KEYS_FILE=str(path), RAG_RATE_LIMIT_TOKENS_PER_MINUTE="50") as running,
        running.client() as client,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        body = {"question": "What is the travel budget?", "max_tokens": 4}
        assert client.post("/ask", json=body, headers=headers).status_code == 200
        over = client.post("/ask", json=body, headers=headers)
        assert over.status_code == 429
        assert "prompt" in over.json()["error"]["message"]


def check_engine_kv_tokens(world: World) -> None:
    """Admission sizes itself to the given cache: an ask larger than all of it is refused."""
    with world.serve(RAG_ENGINE_KV_TOKENS="300") as running, running.client() as client:
        too_large = client.post("/ask", json={"question": "What is the travel budget?"})
        assert too_large.status_code == 413
        assert "holds 300" in too_large.json()["error"]["message"]


def check_engine_max_seqs(world: World) -> None:
    with world.serve(RAG_ENGINE_MAX_SEQS="3") as running:
        assert running.app.state.services.answerer.admission.capacity.max_seqs == 3


def check_engine_metrics_urls(world: World) -> None:
    """Capacity is read from the listed replicas; one that does not answer is shown as down
    (tests/test_engine_pool.py runs two engines behind vllm-router)."""
    own = kv_tokens_from_metrics(httpx.get(f"{world.engine_url}/metrics", timeout=10).text)
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        world.serve(RAG_ENGINE_METRICS_URLS=f"{world.engine_url}/metrics,{dead}") as running,
        running.client() as client,
    ):
        capacity = running.app.state.services.answerer.admission.capacity
        assert (capacity.kv_tokens, capacity.source.split(";")[0]) == (
            own,
            "sum of 1 replicas' num_gpu_blocks × block_size",
        )
        assert f'rag_engine_replica_up{{replica="{dead}"}} 0.0' in client.get("/metrics").text


@contextlib.contextmanager
def _redis(world: World) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip(NO_REDIS)
    server = RedisServer(world.base)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def check_redis_url(world: World) -> None:
    """The replica beats into that Redis, and its key buckets live there."""
    import redis

    path, key = _keys_file()
    with (
        _redis(world) as server,
        world.serve(RAG_REDIS_URL=server.url, RAG_KEYS_FILE=str(path)) as running,
        running.client() as client,
    ):
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).is_success
        seen = redis.Redis(port=server.port, decode_responses=True)
        assert seen.zcard("rag:replicas") == 1
        assert any(name.startswith("rag:rl:") for name in seen.scan_iter("rag:rl:*"))
        assert seen.hlen("rag:keys") == 1  # the key file imported into the shared store


def check_answer_cache(world: World) -> None:
    with pytest.raises(ValueError, match="RAG_REDIS_URL"):
        world.serve(RAG_ANSWER_CACHE="true")
    world.monkeypatch.delenv("RAG_ANSWER_CACHE")
    with _redis(world) as server:
        with world.serve(RAG_REDIS_URL=server.url) as running:
            assert not _answer(running, max_tokens=4)["timings"]["cached"]
            assert not _answer(running, max_tokens=4)["timings"]["cached"]  # off by default
        with world.serve(RAG_ANSWER_CACHE="true") as running:
            assert not _answer(running, max_tokens=4)["timings"]["cached"]
            assert _answer(running, max_tokens=4)["timings"]["cached"]


def check_answer_cache_ttl(world: World) -> None:
    with _redis(world) as server:
        env = {"RAG_REDIS_URL": server.url, "RAG_ANSWER_CACHE": "true"}
        with world.serve(**env, RAG_ANSWER_CACHE_TTL_S="1") as running:
            assert not _answer(running, max_tokens=4)["timings"]["cached"]
            assert _answer(running, max_tokens=4)["timings"]["cached"]
            time.sleep(2.1)
            assert not _answer(running, max_tokens=4)["timings"]["cached"]


def check_request_timeout(world: World) -> None:
    """A default deadline too short for any first token: 503 overloaded, with Retry-After."""
    with world.serve(RAG_REQUEST_TIMEOUT_S="0.001") as running, running.client() as client:
        late = client.post("/ask", json={"question": "What is the travel budget?"})
        assert late.status_code == 503
        assert late.json()["error"]["type"] == "overloaded"
        assert int(late.headers["retry-after"]) >= 1


def check_max_request_timeout(world: World) -> None:
    with world.serve(RAG_MAX_REQUEST_TIMEOUT_S="45") as running, running.client() as client:
        body = {"question": "What is the travel budget?", "max_tokens": 4}
        assert client.post("/ask", json={**body, "timeout_s": 45}).status_code == 200
        over = client.post("/ask", json={**body, "timeout_s": 46})
        assert over.status_code == 422
        assert "at most 45" in over.json()["error"]["message"]


def _admission_check(env: str, value: str, attribute: str) -> Callable[[World], None]:
    def check(world: World) -> None:
        with world.serve(**{env: value}) as running:
            admission = running.app.state.services.answerer.admission
            assert getattr(admission, attribute) == type(getattr(admission, attribute))(value)

    return check


def check_ingest_roots(world: World) -> None:
    roots, outside = Path.cwd() / "roots", Path.cwd() / "outside"
    for folder in (roots / "team", outside):
        folder.mkdir(parents=True)
        (folder / "note.md").write_text("# Note\n\nThe Ferncliff quay opens at dawn.\n")
    env = f"/nonexistent{os.pathsep}{roots}"
    path, key = _keys_file(write=True)  # writing always needs a key with write rights
    with (
        world.serve(RAG_INGEST_ROOTS=env, RAG_KEYS_FILE=str(path)) as running,
        running.client() as client,
    ):
        client.headers["Authorization"] = f"Bearer {key}"
        url = "/v1/indexes/roots-check/sync"
        refused = client.post(url, json={"folders": [str(outside)]})
        assert refused.status_code == 403, refused.text
        accepted = client.post(url, json={"folders": [str(roots / "team")]})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 300
        while (job := client.get(accepted.headers["location"]).json())["state"] != "succeeded":
            assert job["state"] in ("queued", "running"), job
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job["report"]["added"] == 1


def check_uploads_max_mb(world: World) -> None:
    path, key = _keys_file(write=True)
    with (
        world.serve(RAG_UPLOADS_MAX_MB="0.001", RAG_KEYS_FILE=str(path)) as running,
        running.client() as client,
    ):
        client.headers["Authorization"] = f"Bearer {key}"
        files = [("files", ("ledger.md", b"# Ledger\n\n" + b"row " * 500))]  # 2 kB > 1 kB
        response = client.post("/v1/indexes/quota-check/documents", files=files)
    assert response.status_code == 413, response.text
    assert "RAG_UPLOADS_MAX_MB" in response.json()["error"]["message"]


def check_allowed_hosts(world: World) -> None:
    with world.serve(RAG_ALLOWED_HOSTS="rag.example.com") as running, running.client() as client:
        assert client.get("/healthz", headers={"Host": "rag.example.com"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 400


def check_header_timeout(world: World) -> None:
    """A request whose headers stop half-way is answered 408 once the deadline passes."""
    with world.serve(RAG_HEADER_TIMEOUT_S="1") as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            t = time.monotonic()
            assert slow.recv(100).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t < 3


def check_max_connections(world: World) -> None:
    with world.serve(RAG_MAX_CONNECTIONS="2") as running:
        held = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
        try:
            with running.client() as client:
                crowded = client.get("/healthz")
        finally:
            for connection in held:
                connection.close()
    assert crowded.status_code == 503
    assert int(crowded.headers["retry-after"]) >= 1


def check_api_docs(world: World) -> None:
    with world.serve() as off, off.client() as client:
        assert client.get("/docs").status_code == 404
    with world.serve(RAG_API_DOCS="on") as on, on.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "swagger-ui-bundle.js" in page.text


CHECKS: dict[str, Callable[[World], None]] = {
    "RAG_MAX_FILE_MB": _ingest_check(ingest_checks.check_max_file_mb),
    "RAG_INGEST_WORKERS": _ingest_check(ingest_checks.check_ingest_workers),
    "RAG_PARSE_TIMEOUT_S": _ingest_check(ingest_checks.check_parse_timeout),
    "RAG_WORKER_MEMORY_MB": _ingest_check(ingest_checks.check_worker_memory),
    "RAG_OCR": _ingest_check(ingest_checks.check_ocr),
    "RAG_OCR_LANGUAGES": _ingest_check(ingest_checks.check_ocr_languages),
    "RAG_OCR_PAGE_TIMEOUT_S": _ingest_check(ingest_checks.check_ocr_page_timeout),
    "RAG_ARCHIVE_MAX_MEMBERS": _ingest_check(ingest_checks.check_archive_max_members),
    "RAG_ARCHIVE_MAX_MB": _ingest_check(ingest_checks.check_archive_max_mb),
    "RAG_INGEST_ROOTS": check_ingest_roots,
    "RAG_MIN_FREE_MB": _ingest_check(ingest_checks.check_min_free_mb),
    "RAG_UPLOADS_MAX_MB": check_uploads_max_mb,
    "RAG_EMBED_BACKEND": check_embed_backend,
    "RAG_EMBED_DEVICE": check_embed_device,
    "RAG_EMBED_URL": check_embed_url,
    "RAG_EMBED_API_KEY": check_embed_api_key,
    "RAG_AUTH": check_auth,
    "RAG_KEYS_FILE": check_keys_file,
    "RAG_METRICS_PUBLIC": check_metrics_public,
    "RAG_RATE_LIMIT_RPS": check_rate_limit_rps,
    "RAG_RATE_LIMIT_TOKENS_PER_MINUTE": check_rate_limit_tokens,
    "RAG_ENGINE_KV_TOKENS": check_engine_kv_tokens,
    "RAG_ENGINE_MAX_SEQS": check_engine_max_seqs,
    "RAG_ENGINE_METRICS_URLS": check_engine_metrics_urls,
    "RAG_REDIS_URL": check_redis_url,
    "RAG_ANSWER_CACHE": check_answer_cache,
    "RAG_ANSWER_CACHE_TTL_S": check_answer_cache_ttl,
    "RAG_REQUEST_TIMEOUT_S": check_request_timeout,
    "RAG_MAX_REQUEST_TIMEOUT_S": check_max_request_timeout,
    "RAG_ADMISSION_QUEUE_SIZE": _admission_check("RAG_ADMISSION_QUEUE_SIZE", "7", "queue_size"),
    "RAG_ADMISSION_SHORT_TOKENS": _admission_check(
        "RAG_ADMISSION_SHORT_TOKENS", "999", "short_tokens"
    ),
    "RAG_ADMISSION_AGING_S": _admission_check("RAG_ADMISSION_AGING_S", "2.5", "aging_s"),
    "RAG_ADMISSION_LONG_SHARE": _admission_check("RAG_ADMISSION_LONG_SHARE", "0.25", "long_share"),
    "RAG_DATA_DIR": check_data_dir,
    "RAG_CACHE_DIR": check_cache_dir,
    "RAG_INDEXES_DIR": check_indexes_dir,
    "RAG_INDEX": check_index,
    "RAG_EMBED_MODEL": check_embed_model,
    "RAG_EMBED_BATCH_SIZE": check_embed_batch_size,
    "RAG_QUERY_CACHE_SIZE": check_query_cache_size,
    "RAG_HISTORY_MAX_TURNS": check_history_max_turns,
    "RAG_HISTORY_MAX_CHARS": check_history_max_chars,
    "RAG_REWRITE_TIMEOUT_S": check_rewrite_timeout,
    "RAG_TORCH_THREADS": check_torch_threads,
    "RAG_QDRANT_URL": check_qdrant,
    "RAG_QDRANT_API_KEY": check_qdrant,
    "RAG_QDRANT_SHARD_NUMBER": check_qdrant_sharding,
    "RAG_QDRANT_REPLICATION_FACTOR": check_qdrant_sharding,
    "RAG_LLM_URL": check_rag_api_process,
    "RAG_LLM_MODEL": check_llm_model,
    "RAG_LLM_API_KEY": check_llm_api_key,
    "RAG_LLM_TIMEOUT": check_llm_timeout,
    "RAG_LLM_REPETITION_PENALTY": check_repetition_penalty,
    "RAG_LLM_TOKENIZER": check_llm_tokenizer,
    "RAG_LLM_MAX_MODEL_LEN": check_llm_max_model_len,
    "RAG_PROMPT_WARM_PASSAGES": check_prompt_warm_passages,
    "RAG_ENGINE_MODEL": _managed_engine_check(
        "RAG_ENGINE_MODEL", "/models/other", lambda c: c.model == "/models/other"
    ),
    "RAG_ENGINE_MAX_MODEL_LEN": _managed_engine_check(
        "RAG_ENGINE_MAX_MODEL_LEN", "4096", lambda c: "4096" in c.command()
    ),
    "RAG_ENGINE_PORT": _managed_engine_check(
        "RAG_ENGINE_PORT", "8123", lambda c: c.url.endswith(":8123")
    ),
    "RAG_ENGINE_PYTHON": _managed_engine_check(
        "RAG_ENGINE_PYTHON", "/usr/bin/python3", lambda c: c.command()[0] == "/usr/bin/python3"
    ),
    "RAG_ENGINE_EXTRA_ARGS": _managed_engine_check(
        "RAG_ENGINE_EXTRA_ARGS",
        "--load-format dummy --enforce-eager",
        lambda c: c.command()[-3:] == ["--load-format", "dummy", "--enforce-eager"],
    ),
    "RAG_ENGINE_START_TIMEOUT": check_engine_start_timeout,
    "RAG_ENGINE_KV_CACHE_GIB": _managed_engine_check(
        "RAG_ENGINE_KV_CACHE_GIB", "3", lambda c: c.env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    ),
    "RAG_ENGINE_GPU_MEMORY_UTILIZATION": check_gpu_memory_utilization,
    "RAG_ENGINE_LONG_PREFILL_TOKENS": check_long_prefill_tokens,
    "RAG_API_HOST": check_rag_api_process,
    "RAG_API_PORT": check_rag_api_process,
    "RAG_MAX_REQUEST_BYTES": check_max_request_bytes,
    "RAG_CHAT_MAX_REQUEST_BYTES": check_chat_max_request_bytes,
    "RAG_CHAT_SOURCES": check_chat_sources,
    "RAG_ALLOWED_HOSTS": check_allowed_hosts,
    "RAG_HEADER_TIMEOUT_S": check_header_timeout,
    "RAG_MAX_CONNECTIONS": check_max_connections,
    "RAG_API_DOCS": check_api_docs,
    "RAG_TOP_K": check_top_k,
    "RAG_MAX_OUTPUT_TOKENS": check_max_output_tokens,
    "RAG_RETRIEVAL_MODE": _retriever_check("RAG_RETRIEVAL_MODE", "dense", "mode"),
    "RAG_HYBRID_FUSION": _retriever_check("RAG_HYBRID_FUSION", "rrf", "fusion"),
    "RAG_PASSAGE_ORDER": check_passage_order,
    "RAG_RERANK_MODEL": check_rerank_model,
    "RAG_RERANK_CANDIDATES": _retriever_check("RAG_RERANK_CANDIDATES", "7", "rerank_candidates"),
}


def test_every_documented_setting_has_a_check() -> None:
    documented = set(documented_settings())
    assert len(documented) > 25
    missing = documented - set(CHECKS)
    assert not missing, f"documented settings without a check: {sorted(missing)}"


@pytest.fixture(scope="module")
def settings_base(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    base = tmp_path_factory.mktemp("settings")
    index_corpus(base, embedder)
    return base


@pytest.fixture
def world(
    settings_base: Path,
    engine_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_cross_encoder: Path,  # noqa: F811  (the fixture imported above)
) -> World:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return World(settings_base, engine_url, monkeypatch, tiny_cross_encoder)


@pytest.mark.parametrize("setting", sorted(documented_settings()))
def test_a_documented_setting_takes_effect(setting: str, world: World) -> None:
    CHECKS[setting](world)
