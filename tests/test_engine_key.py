"""The managed engine takes requests from its service only: `rag-api` starts it with a random key
that no other local user can learn (not on its command line) and sends it on every call. The real
`rag-api` process and the real vLLM CPU engine it starts.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from rag.config import Settings
from rag.embed import Embedder
from rag.engine import local_engine_config
from tests.service import engine_processes, free_port, index_corpus, start_api

QUESTION = {"question": "What is the travel budget?", "max_tokens": 8}
# Routes of vLLM's server that its own --api-key leaves open (it guards /v1/... only).
UNGUARDED_BY_VLLM = [
    ("POST", "/tokenize", {"model": "SmolLM2-135M-Instruct", "prompt": "hello"}),
    ("POST", "/detokenize", {"model": "SmolLM2-135M-Instruct", "tokens": [1, 2]}),
    ("GET", "/metrics", None),
    ("GET", "/version", None),
    ("POST", "/invocations", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
]
GUARDED_BY_VLLM = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
]


def test_the_engines_command_line_holds_no_key_and_its_environment_does() -> None:
    config = local_engine_config(Settings(engine_model="some/model"), api_key="k-secret")
    assert "k-secret" not in " ".join(config.command())
    assert "--middleware" in config.command()
    assert "k-secret" not in repr(config)
    env = config.environment({"PYTHONPATH": "/elsewhere"})
    assert env["VLLM_API_KEY"] == "k-secret"
    assert env["PYTHONPATH"].endswith(":/elsewhere")
    assert Path(env["PYTHONPATH"].split(":")[0], "engine_key.py").is_file()
    unkeyed = local_engine_config(Settings(engine_model="some/model"))
    assert "--middleware" not in unkeyed.command()


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"/readyz did not answer 200 within {timeout:.0f} s")


@pytest.mark.engine
def test_the_managed_engine_refuses_every_request_without_the_services_key(
    tmp_path: Path, embedder: Embedder
) -> None:
    index_corpus(tmp_path, embedder, "docs")
    port = free_port()
    api, url = start_api(tmp_path, RAG_INDEX="docs", RAG_ENGINE_PORT=str(port))
    engine = f"http://127.0.0.1:{port}"
    try:
        server = engine_processes(api)[0]
        assert "--api-key" not in server.cmdline()
        key = server.environ()["VLLM_API_KEY"]  # readable by its owner (and root) only
        assert key
        assert key not in " ".join(server.cmdline())
        wait_ready(url, timeout=900)

        assert httpx.get(f"{engine}/health", timeout=10).status_code == 200  # liveness only
        for method, path, body in [*UNGUARDED_BY_VLLM, *GUARDED_BY_VLLM]:
            for headers in ({}, {"Authorization": "Bearer not-the-key"}):
                refused = httpx.request(method, f"{engine}{path}", json=body, headers=headers)
                assert refused.status_code == 401, (path, refused.text)
        keyed = httpx.get(f"{engine}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200

        answered = httpx.post(f"{url}/ask", json=QUESTION, timeout=300)
        assert answered.status_code == 200, answered.text
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        # Read from the engine's /metrics with the key: its KV cache, its prefix cache.
        capacity = re.search(r"^rag_engine_capacity_tokens (\S+)$", metrics, re.M)
        assert capacity is not None
        assert float(capacity.group(1)) > 8192
        queries = re.search(r"^rag_engine_prefix_cache_queries (\S+)$", metrics, re.M)
        assert queries is not None
        assert float(queries.group(1)) > 0
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=120)
