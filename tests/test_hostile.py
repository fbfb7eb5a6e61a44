"""rag-ingest on a messy shared drive: every entry accounted for, nothing takes the run down."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from rag.ask import Retriever
from rag.embed import Embedder, SparseEncoder
from rag.store import EdgeStore
from tests.hostile import NON_UTF8_NAME, HostileFolder, build_hostile_folder
from tests.hostile_office import SECRET, OfficeFolder, build_office_folder

BIN = Path(sys.executable).parent
RUN_BOUND_S = 150  # 2 minutes plus embedding a handful of small files
PEAK_RSS_BOUND = 2.5e9


class TreeWatch:
    """Samples the summed RSS of a process and its descendants; can kill its first parse worker
    once that worker has spent ``kill_after_cpu_s`` of CPU (busy on the endless file)."""

    def __init__(self, process: subprocess.Popen[bytes], kill_after_cpu_s: float | None) -> None:
        self.root = psutil.Process(process.pid)
        self.kill_after = kill_after_cpu_s
        self.peak_rss = 0
        self.seen: set[int] = set()  # every process of the tree, for the leftover check
        self.killed: int | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                self.seen.update(p.pid for p in tree)
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                if not self.root.is_running():
                    return
                continue
            if self.kill_after is not None and self.killed is None:
                self._kill_busy_worker(tree)
            time.sleep(0.05)

    def _kill_busy_worker(self, tree: list[psutil.Process]) -> None:
        for server in (p for p in tree if "forkserver" in " ".join(p.cmdline())):
            for worker in server.children():
                if sum(worker.cpu_times()[:2]) >= (self.kill_after or 0):
                    worker.send_signal(signal.SIGKILL)
                    self.killed = worker.pid
                    return


def ingest(
    folder: Path,
    data: Path,
    *args: str,
    kill_after_cpu_s: float | None = None,
    max_file_mb: int = 3,
) -> Any:
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
        "RAG_MAX_FILE_MB": str(max_file_mb),
        "RAG_PARSE_TIMEOUT_S": "8",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [str(BIN / "rag-ingest"), str(folder), "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watch = TreeWatch(process, kill_after_cpu_s)
    out, err = process.communicate(timeout=RUN_BOUND_S + 60)
    elapsed = time.monotonic() - started
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert out, err.decode(errors="replace")
    report = json.loads(out)
    return process.returncode, report, elapsed, watch


def reasons(entries: list[dict[str, str]], root: Path) -> dict[str, str]:
    return {os.path.relpath(e["path"], root): e["reason"] for e in entries}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileFolder:
    return build_hostile_folder(
        tmp_path_factory.mktemp("drive") / "share", big_file_bytes=4_000_000
    )


@pytest.fixture(scope="module")
def first_run(hostile: HostileFolder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("hostile-data")
    # One worker takes the files in order, so the first (the endless PDF) is the one it is
    # parsing when it is killed from outside.
    code, report, elapsed, watch = ingest(
        hostile.root, data, "--workers", "1", kill_after_cpu_s=2.0
    )
    return {"data": data, "code": code, "report": report, "elapsed": elapsed, "watch": watch}


def test_every_entry_is_ingested_skipped_or_failed_with_a_reason(
    hostile: HostileFolder, first_run: dict[str, Any]
) -> None:
    report = first_run["report"]
    assert first_run["code"] == 1
    failed = reasons(report["failed"], hostile.root.resolve())
    skipped = reasons(report["skipped_files"], hostile.root.resolve())
    assert set(failed) == hostile.failed
    assert set(skipped) == hostile.skipped
    assert all(failed.values())
    assert all(skipped.values())
    assert report["added"] == len(hostile.good)
    assert skipped["endless.txt"] == "outside the ingest roots"  # the link to /dev/zero
    assert "FIFO" in skipped["pipe.txt"]
    assert "socket" in skipped["sock.md"]
    assert "4.0 MB" in skipped["big.txt"]
    assert "RAG_MAX_FILE_MB" in skipped["big.txt"]
    assert skipped["locked.pdf"] == "password-protected PDF"
    assert failed["loop-a.md"] == "symlink loop"
    assert failed["empty.pdf"] == "empty file"
    assert "binary" in failed["binary.md"]


def test_a_worker_killed_from_outside_fails_only_its_file(
    hostile: HostileFolder, first_run: dict[str, Any]
) -> None:
    assert first_run["watch"].killed is not None
    failed = reasons(first_run["report"]["failed"], hostile.root.resolve())
    assert "killed (SIGKILL)" in failed[hostile.endless]
    assert first_run["report"]["workers_replaced"] >= 1


def test_the_run_is_bounded_in_time_and_memory(first_run: dict[str, Any]) -> None:
    assert first_run["elapsed"] < RUN_BOUND_S
    assert 0 < first_run["watch"].peak_rss <= PEAK_RSS_BOUND


def test_text_the_tokenizer_cannot_represent_is_left_out_and_counted(
    first_run: dict[str, Any],
) -> None:
    dropped = first_run["report"]["unrepresentable"]
    assert dropped["runs"] >= 1
    assert dropped["chars"] >= 1_900_000


def test_good_files_are_searchable_and_a_non_utf8_name_is_kept_losslessly(
    hostile: HostileFolder, first_run: dict[str, Any], embedder: Embedder
) -> None:
    store = EdgeStore(first_run["data"])
    try:
        retriever = Retriever(store, embedder, SparseEncoder())
        for source, sentence in hostile.good.items():
            hits = retriever.retrieve("default", sentence, 3).hits
            assert hits[0].payload["source"] == source, (source, hits[0].payload["source"])
            assert sentence.split()[-2] in hits[0].payload["text"]
        odd = next(
            p for _, p in store.scan("default", ["source", "source_raw"]) if "source_raw" in p
        )
        assert base64.b64decode(odd["source_raw"]) == NON_UTF8_NAME
        longest = max(embedder.count_tokens(p["text"]) for _, p in store.scan("default", ["text"]))
        assert longest <= embedder.max_tokens
    finally:
        store.close()


def test_a_second_run_rewrites_nothing_and_times_out_the_endless_file(
    hostile: HostileFolder, first_run: dict[str, Any]
) -> None:
    code, report, elapsed, _ = ingest(hostile.root, first_run["data"])
    assert code == 1
    assert (report["chunks_written"], report["chunks_deleted"]) == (0, 0)
    assert report["unchanged"] == len(hostile.good)
    failed = reasons(report["failed"], hostile.root.resolve())
    assert set(failed) == hostile.failed
    assert "RAG_PARSE_TIMEOUT_S" in failed[hostile.endless]
    assert elapsed < RUN_BOUND_S


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> OfficeFolder:
    base = tmp_path_factory.mktemp("office")
    return build_office_folder(base / "share", base / "outside-secret.txt")


@pytest.fixture(scope="module")
def office_run(office: OfficeFolder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("office-data")
    code, report, elapsed, watch = ingest(office.root, data, "--workers", "1", max_file_mb=20)
    return {"data": data, "code": code, "report": report, "elapsed": elapsed, "watch": watch}


def test_hostile_office_files_are_each_ingested_skipped_or_failed_with_a_reason(
    office: OfficeFolder, office_run: dict[str, Any]
) -> None:
    report, root = office_run["report"], office.root.resolve()
    assert office_run["code"] == 1  # the torn packages fail
    failed = reasons(report["failed"], root)
    files = {
        name: reason
        for name, reason in reasons(report["skipped_files"], root).items()
        if "/" not in name
    }  # entries below a file are its members
    for name, phrase in office.skipped.items():
        assert phrase in files[name], (name, files.get(name))
    for name, phrase in office.failed.items():
        assert phrase in failed[name], (name, failed.get(name))
    accounted = set(office.good) | set(office.skipped) | set(office.failed) | office.either
    assert set(failed) | set(files) <= accounted
    assert report["added"] >= len(office.good)
    assert all(failed.values())
    assert all(files.values())


def test_hostile_office_files_stay_within_time_and_memory_and_leave_no_worker(
    office_run: dict[str, Any],
) -> None:
    assert office_run["elapsed"] < RUN_BOUND_S
    assert 0 < office_run["watch"].peak_rss <= PEAK_RSS_BOUND
    watch = office_run["watch"]
    time.sleep(1)  # workers exit with their fork server, just after the command
    assert [pid for pid in watch.seen if _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_no_entity_leaks_a_file_and_good_office_files_are_searchable(
    office: OfficeFolder, office_run: dict[str, Any], embedder: Embedder
) -> None:
    store = EdgeStore(office_run["data"])
    try:
        texts = [p["text"] for _, p in store.scan("default", ["text"])]
        assert not any(SECRET in text for text in texts)
        assert not any("lollollol" in text for text in texts)
        retriever = Retriever(store, embedder, SparseEncoder())
        for name, sentence in office.good.items():
            hits = retriever.retrieve("default", sentence, 3).hits
            assert any(sentence in h.payload["text"] for h in hits), name
    finally:
        store.close()
