"""`rag-api` with no URLs starts its own engine, and never leaves it behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.service import free_port

pytestmark = pytest.mark.engine
BIN = Path(sys.executable).parent


def start_api(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, engine_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_API_PORT": str(port),
        "RAG_ENGINE_PORT": str(engine_port),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAG_LLM_URL", None)
    env.pop("RAG_QDRANT_URL", None)
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen([str(BIN / "rag-api")], env=env, stdout=log, stderr=log)
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


def wait_gone(processes: list[psutil.Process], timeout: float = 60) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_rag_api_stops_its_engine(tmp_path: Path, sig: signal.Signals) -> None:
    api, url = start_api(tmp_path)
    try:
        engine = engine_processes(api)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the service answers while its engine starts
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 503  # engine still starting, no index yet
        api.send_signal(sig)
        assert api.wait(timeout=60) is not None
        assert wait_gone(engine) == []
    finally:
        if api.poll() is None:
            api.kill()


def test_a_killed_rag_api_takes_its_engine_with_it(tmp_path: Path) -> None:
    api, _ = start_api(tmp_path)
    try:
        engine = engine_processes(api)
        api.kill()  # SIGKILL: no shutdown code runs; the parent-death signal does the work
        api.wait(timeout=10)
        assert wait_gone(engine) == []
    finally:
        if api.poll() is None:
            api.kill()
