"""A full disk never kills the service: every write of the embedded store, and every upload,
first checks that RAG_MIN_FREE_MB stay free, and is refused (disk_full, HTTP 507, rag-ingest
exit 3) before anything is written; reads go on.

Most tests fake the file system's free space (``rag.store.disk.free_bytes``); where a tmpfs can
be mounted (root), one fills a real small file system under a running `rag-api`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import rag.store.disk as disk
from rag.embed import Embedder
from rag.errors import DiskFullError
from rag.guard import KeyStore
from rag.indexes import ChunkingSpec, IndexMeta, IndexSpec
from rag.ingest import FolderSync, IngestLimits
from rag.ingest.jobs import JobRunner
from rag.store import EdgeStore, SearchQuery, StoredChunk
from tests import ingest_checks
from tests.ingest_app import NO_ENGINE, ingest_app, upload, wait_job
from tests.service import free_port
from tests.test_jobs import finished

MB = 1_000_000
GB = 1000 * MB


class FakeDisk:
    """The free space every check sees, settable at any moment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free: int = 10 * GB) -> None:
        self.free = free
        self.checks = 0
        monkeypatch.setattr(disk, "free_bytes", self._free_bytes)

    def _free_bytes(self, path: Path) -> int:
        self.checks += 1
        return self.free


def meta(name: str) -> IndexMeta:
    return IndexMeta(
        name=name,
        embed_model="m",
        dim=4,
        max_tokens=256,
        chunking=ChunkingSpec(),
        sparse="bm25",
        created_at="2026-12-01T00:00:00+00:00",
    )


def points(start: int, count: int) -> list[StoredChunk]:
    rng = np.random.default_rng(start)
    return [
        StoredChunk(
            f"00000000-0000-0000-0000-{k:012d}",
            rng.random(4, dtype=np.float32),
            None,
            {"text": f"passage {k}"},
        )
        for k in range(start, start + count)
    ]


@pytest.fixture
def fake_disk(monkeypatch: pytest.MonkeyPatch) -> FakeDisk:
    return FakeDisk(monkeypatch)


@pytest.fixture
def reserved(tmp_path: Path, fake_disk: FakeDisk) -> Iterator[EdgeStore]:
    """An embedded store keeping 100 MB free, with an index "docs" of three points."""
    store = EdgeStore(tmp_path / "data", min_free_bytes=100 * MB)
    store.create_index(meta("docs"))
    store.upsert("docs", points(0, 3))
    yield store
    fake_disk.free = 10 * GB
    store.close()


def test_every_write_of_the_embedded_store_is_refused_below_the_reserve(
    reserved: EdgeStore, fake_disk: FakeDisk, tmp_path: Path
) -> None:
    fake_disk.free = 99 * MB
    with pytest.raises(DiskFullError, match="RAG_MIN_FREE_MB"):
        reserved.create_index(meta("other"))
    assert not (tmp_path / "data" / "indexes" / "other").exists()
    writes: list[Callable[[], None]] = [
        lambda: reserved.upsert("docs", points(3, 2)),
        lambda: reserved.delete("docs", [points(0, 1)[0].id]),
        lambda: reserved.optimize("docs"),
    ]
    for write in writes:
        checked = fake_disk.checks
        with pytest.raises(DiskFullError):
            write()
        assert fake_disk.checks > checked
    assert reserved.count("docs") == 3  # nothing was written
    query = SearchQuery(dense=points(0, 1)[0].dense, sparse=None, limit=2)
    assert len(reserved.search("docs", query)) == 2  # reads go on
    assert reserved.list_indexes() == ["docs"]


def test_without_a_reserve_nothing_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDisk(monkeypatch, free=0)
    store = EdgeStore(tmp_path / "data", min_free_bytes=0)
    try:
        store.create_index(meta("docs"))
        store.upsert("docs", points(0, 2))
        assert (store.count("docs"), fake.checks) == (2, 0)
    finally:
        store.close()


def test_optimizing_is_left_for_later_when_a_second_copy_would_not_fit(
    reserved: EdgeStore, fake_disk: FakeDisk, caplog: pytest.LogCaptureFixture
) -> None:
    fake_disk.free = 100 * MB + 1  # the reserve holds, but not with the index's size on top
    with caplog.at_level(logging.WARNING, logger="rag.store"):
        reserved.optimize("docs")
    assert "not optimized" in caplog.text
    assert reserved.count("docs") == 3


def notes(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(count):
        (folder / f"n{k:02d}.md").write_text(f"# Note {k}\n\nThe kiln at shed {k} fires at dawn.\n")
    return folder


@pytest.fixture
def runner(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[JobRunner, EdgeStore]]:
    store = EdgeStore(tmp_path / "data", min_free_bytes=100 * MB)

    def syncs(index: str) -> FolderSync:
        limits = IngestLimits(workers=1, batch_chunks=1)  # one write per file
        return FolderSync(store, embedder, IndexSpec(name=index), limits=limits)

    jobs = JobRunner(store, syncs)
    yield jobs, store
    jobs.close()
    store.close()


def test_a_job_that_meets_a_full_disk_fails_with_disk_full_and_a_later_one_finishes(
    runner: tuple[JobRunner, EdgeStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, store = runner
    fake = FakeDisk(monkeypatch)
    folder = notes(tmp_path / "notes", 6)
    real_upsert = store.upsert
    written: list[int] = []

    def upsert_then_fill(index: str, chunks: list[StoredChunk]) -> None:
        real_upsert(index, chunks)
        written.append(len(chunks))
        if len(written) == 2:
            fake.free = 50 * MB  # the disk fills up behind the second file

    monkeypatch.setattr(store, "upsert", upsert_then_fill)
    job = finished(jobs, jobs.sync("docs", [folder]).id)
    assert job["state"] == "failed", job
    assert job["error"]["type"] == "disk_full"
    assert "RAG_MIN_FREE_MB" in job["error"]["message"]
    assert store.count("docs") == 2  # the files written before, each complete
    fake.free = 10 * GB
    again = finished(jobs, jobs.sync("docs", [folder]).id)
    assert again["state"] == "succeeded", again
    assert (again["report"]["added"], again["report"]["unchanged"]) == (4, 2)


def test_rag_ingest_exits_3_with_a_clear_message_below_the_reserve(tmp_path: Path) -> None:
    ingest_checks.check_min_free_mb(tmp_path)


def test_an_upload_below_the_reserve_gets_507_and_asks_keep_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = notes(tmp_path / "roots" / "team", 2)
    with ingest_app(tmp_path / "data", min_free_mb=100) as app, app.client() as client:
        first = upload(app, ("a.md", b"# A\n\nThe Oxbury mill opens.\n"))
        assert first.status_code == 202, first.text
        with app.client(app.admin) as admin:  # the index exists before the disk fills
            assert wait_job(admin, first.headers["location"])["state"] == "succeeded"
        fake = FakeDisk(monkeypatch, free=99 * MB)
        refused = upload(app, ("b.md", b"# B\n\nThe Oxbury mill closes.\n"))
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["type"] == "disk_full"
        assert "RAG_MIN_FREE_MB" in refused.json()["error"]["message"]
        assert sorted(p.name for p in app.uploads.iterdir()) == ["a.md"]
        with app.client(app.admin) as admin:
            accepted = admin.post("/v1/indexes/default/sync", json={"folders": [str(folder)]})
            assert accepted.status_code == 202, accepted.text
            job = wait_job(admin, accepted.headers["location"])
        assert (job["state"], job["error"]["type"]) == ("failed", "disk_full")
        listed = client.get("/v1/indexes/default/documents")
        assert listed.status_code == 200
        assert client.get("/healthz").status_code == 200
        fake.free = 10 * GB


# -- a real full file system ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs, where the machine lets this user mount one (root); else skipped."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> None:
    """Grow the ballast file until ``leave`` bytes stay free."""
    ballast = mount / "ballast"
    free = disk.free_bytes(mount)
    with ballast.open("ab") as out:
        out.write(b"\0" * max(0, free - leave))
        out.flush()
        os.fsync(out.fileno())


def test_rag_api_survives_a_really_full_disk(small_disk: Path, tmp_path: Path) -> None:
    """Without the reserve, the second sync's writes pass the free space and Qdrant Edge dies of
    SIGBUS (rag-api with it); with it the job fails with disk_full and the service answers."""
    data = small_disk / "data"

    admin = KeyStore(data / "keys.json").create("ops", all_indexes=True, admin=True)
    small = notes(tmp_path / "roots" / "small", 1)
    big = tmp_path / "roots" / "big"
    big.mkdir()
    words = [
        "harbour",
        "ledger",
        "crate",
        "depot",
        "quay",
        "vessel",
        "levy",
        "tide",
        "pier",
        "lamp",
        "keeper",
        "ferry",
    ]
    for part in range(3):
        rows = [
            f"Entry {k}: the {words[k % 6]} of {words[(k * 5) % 6]} row {k} is {k * 31 % 997}."
            for k in range(part * 6000, (part + 1) * 6000)
        ]
        (big / f"part-{part}.md").write_text("# Ledger\n\n" + "\n".join(rows))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(data),
        RAG_API_PORT=str(port),
        RAG_LLM_URL=NO_ENGINE,
        RAG_MIN_FREE_MB="4",
        RAG_EMBED_BATCH_SIZE="8",  # writes of 64 chunks: each one checked
        RAG_INGEST_WORKERS="1",
        HF_HUB_OFFLINE="1",
    )
    log = (tmp_path / "api.log").open("ab")
    api = subprocess.Popen(
        [str(Path(sys.executable).parent / "rag-api")], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {admin}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            deadline = time.monotonic() + 180
            while not (data / "service.json").exists():
                assert api.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.5)

            def sync(folder: Path) -> dict[str, object]:
                response = client.post("/v1/indexes/default/sync", json={"folders": [str(folder)]})
                assert response.status_code == 202, response.text
                return wait_job(client, response.headers["location"], timeout=600)

            assert sync(small)["state"] == "succeeded"
            fill(small_disk, leave=5 * MB)  # 1 MB above the reserve; the ledger needs more
            job = sync(big)
            assert api.poll() is None, f"rag-api died ({api.returncode})"
            assert job["state"] == "failed", job
            assert job["error"]["type"] == "disk_full"  # type: ignore[index]
            refused = client.post(
                "/v1/indexes/default/documents", files=[("files", ("c.md", b"# C\n\nc\n"))]
            )
            assert refused.status_code == 507, refused.text
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/indexes/default/documents").status_code == 200
            (small_disk / "ballast").unlink()  # space again: the next write goes through
            accepted = client.post(
                "/v1/indexes/default/documents", files=[("files", ("c.md", b"# C\n\nc\n"))]
            )
            assert accepted.status_code == 202, accepted.text
            assert wait_job(client, accepted.headers["location"])["state"] == "succeeded"
        assert api.poll() is None
    finally:
        api.terminate()
        api.wait(timeout=60)
