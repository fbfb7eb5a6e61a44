"""The job runner of ingestion over HTTP (rag/ingest/jobs.py) on the real store and embedder: one
writer per index, and a shutdown that stops between files. The HTTP side is in
test_ingest_jobs.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.embed import Embedder
from rag.indexes import IndexSpec
from rag.ingest import FolderSync, IngestLimits
from rag.ingest.jobs import JobRunner, JobsClosedError
from rag.store import EdgeStore


@pytest.fixture
def runner(tmp_path: Path, embedder: Embedder) -> Iterator[JobRunner]:
    store = EdgeStore(tmp_path / "data")

    def syncs(index: str) -> FolderSync:
        # Written one chunk at a time: files finish one by one (with the default batch all 40
        # notes of the shutdown test are written, and counted done, in one go).
        limits = IngestLimits(workers=1, batch_chunks=1)
        return FolderSync(store, embedder, IndexSpec(name=index), limits=limits)

    jobs = JobRunner(store, syncs)
    yield jobs
    jobs.close()
    store.close()


def notes(folder: Path, count: int) -> Path:
    for k in range(count):
        (folder / f"n{k}.md").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"n{k}.md").write_text(f"# Note {k}\n\nThe kiln at shed {k} fires at dawn.\n")
    return folder


def finished(runner: JobRunner, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := runner.get(job_id)) is not None and job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job is not None
    return job


def test_jobs_for_one_index_queue_behind_each_other(runner: JobRunner, tmp_path: Path) -> None:
    first = runner.sync("docs", [notes(tmp_path / "a", 3)])
    second = runner.sync("docs", [notes(tmp_path / "b", 2)])
    assert runner.get(second.id)["state"] == "queued"  # type: ignore[index]
    done_first, done_second = finished(runner, first.id), finished(runner, second.id)
    assert done_first["state"] == done_second["state"] == "succeeded"
    assert done_second["started_at"] >= done_first["finished_at"]
    assert (done_first["report"]["added"], done_second["report"]["added"]) == (3, 2)


def test_closing_stops_the_running_job_after_its_file_and_fails_the_queued(
    runner: JobRunner, tmp_path: Path
) -> None:
    running = runner.sync("docs", [notes(tmp_path / "a", 40)])
    queued = runner.sync("docs", [notes(tmp_path / "b", 2)])
    deadline = time.monotonic() + 120
    while runner.get(running.id)["progress"]["files_done"] == 0:  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.close()
    stopped, cancelled = runner.get(running.id), runner.get(queued.id)
    assert stopped is not None
    assert cancelled is not None
    assert stopped["state"] == cancelled["state"] == "failed"
    assert stopped["error"]["type"] == cancelled["error"]["type"] == "cancelled"
    assert 1 <= stopped["progress"]["files_done"] < 40
    with pytest.raises(JobsClosedError):
        runner.sync("docs", [tmp_path / "a"])


def test_a_sync_held_to_its_roots_skips_links_that_lead_out_of_them(
    runner: JobRunner, tmp_path: Path
) -> None:
    outside = notes(tmp_path / "outside", 2)
    root = notes(tmp_path / "root", 1)
    (root / "x.md").symlink_to(outside / "n0.md")
    (root / "away").symlink_to(outside)
    (root / "inside.md").symlink_to(root / "n0.md")  # a link that stays inside is followed
    job = finished(runner, runner.sync("docs", [root], within=[root]).id)
    assert job["state"] == "succeeded", job
    skipped = {Path(e["path"]).name: e["reason"] for e in job["report"]["skipped_files"]}
    assert skipped == {"x.md": "outside the ingest roots", "away": "outside the ingest roots"}
    assert job["report"]["added"] == 2  # n0.md and inside.md
    free = finished(runner, runner.sync("free", [root]).id)
    assert free["report"]["added"] == 5  # without roots, links are followed as rag-ingest does
