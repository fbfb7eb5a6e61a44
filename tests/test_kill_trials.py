"""SIGKILL at seeded moments: whatever rag-ingest was doing, the next run ends where a clean run
ends — the same point ids, the same count, the same payloads."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rag.store import EdgeStore
from tests.documents import write_corpus, write_pdf

BIN = Path(sys.executable).parent
TRIALS = 10
SEED = 20261123


def write_trial_corpus(folder: Path) -> None:
    """Enough chunks for several embed-and-write batches, in PDFs, Markdown and text."""
    write_corpus(folder)
    rng = random.Random(SEED)
    words = ["ledger", "harbour", "quince", "glacier", "saffron"]
    words += ["tram", "falcon", "orchard", "lantern", "kiosk"]
    for n in range(6):
        paragraphs = [" ".join(rng.choice(words) for _ in range(70)) + "." for _ in range(12)]
        (folder / f"notes-{n}.md").write_text(f"# Notes {n}\n\n" + "\n\n".join(paragraphs))
        write_pdf(folder / f"filing-{n}.pdf", paragraphs[:4])


def start(folder: Path, data: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBED_BATCH_SIZE": "2",  # batches of 16 chunks: many write moments to hit
    }
    return subprocess.Popen(
        [str(BIN / "rag-ingest"), str(folder), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode(errors="replace")
    report: dict[str, object] = json.loads(out)
    return report


def points(data: Path) -> dict[str, str]:
    """Point id -> a hash of its payload."""
    store = EdgeStore(data)
    try:
        return {
            pid: hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            for pid, payload in store.scan(
                "default",
                [
                    "root",
                    "source",
                    "sha256",
                    "page",
                    "char_start",
                    "char_end",
                    "chunk_index",
                    "n_chunks",
                    "text",
                    "heading",
                    "mtime",
                    "type",
                    "dirs",
                ],
            )
        }
    finally:
        store.close()


def wait_for_workers(process: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Seconds until rag-ingest has started its parse workers (start-up is over)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and process.poll() is None:
        tree = psutil.Process(process.pid).children(recursive=True)
        if any("forkserver" in " ".join(p.cmdline()) for p in tree):
            return time.monotonic() - started
        time.sleep(0.02)
    return time.monotonic() - started


def kill_tree_or_worker(process: subprocess.Popen[bytes], worker_only: bool) -> str:
    """SIGKILL rag-ingest (its workers go with it), or one of its parse workers."""
    if worker_only:
        tree = psutil.Process(process.pid).children(recursive=True)
        servers = [p for p in tree if "forkserver" in " ".join(p.cmdline())]
        workers = [w for s in servers for w in s.children()]
        if workers:
            workers[0].send_signal(signal.SIGKILL)
            return "worker"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return "ingest"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trial-docs")
    write_trial_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def clean(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], float]:
    """The points of an uninterrupted run, and how long it works once its workers are up."""
    data = tmp_path_factory.mktemp("clean")
    process = start(corpus, data)
    startup = wait_for_workers(process)
    started = time.monotonic() - startup
    report = finish(process)
    assert report["chunks_written"] > 40  # several batches of 16
    return points(data), time.monotonic() - started - startup


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_run_killed_at_any_moment_is_healed_by_the_next_run(
    trial: int, corpus: Path, clean: tuple[dict[str, str], float], tmp_path: Path
) -> None:
    expected, working_seconds = clean
    rng = random.Random(SEED + trial)
    # Moments spread over the run's work once its workers are up: parsing, embedding, writing.
    delay = working_seconds * (trial + rng.random()) / TRIALS
    worker_only = trial % 3 == 2
    process = start(corpus, tmp_path / "data")
    wait_for_workers(process)
    time.sleep(delay)
    if process.poll() is None:
        kill_tree_or_worker(process, worker_only)
    process.communicate(timeout=600)
    finish(start(corpus, tmp_path / "data"))  # the rerun
    assert points(tmp_path / "data") == expected
