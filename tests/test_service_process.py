"""`rag-api` with no URLs starts its own engine, and never leaves it behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.service import engine_processes, start_api

pytestmark = pytest.mark.engine


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
