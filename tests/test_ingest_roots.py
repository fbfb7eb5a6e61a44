"""Files are read only from inside the roots of a sync, however the folder changes during it.

A sync held to roots (RAG_INGEST_ROOTS over HTTP, the folders named on `rag-ingest`'s command
line) opens each file once, through `open_within`, and hashes and parses that descriptor's bytes:
a symlink swapped in after the file was listed - as the file itself or as a folder on its way -
is skipped "outside the ingest roots", while a link to a file inside the roots is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rag.ingest.reading as reading
import rag.ingest.sync as sync_module
from rag.embed import Embedder
from rag.guard.service_record import read_record, write_record
from rag.indexes import IndexSpec
from rag.ingest import FolderSync, IngestLimits
from rag.ingest.discovery import Discovery, discover
from rag.ingest.jobs import JobRunner
from rag.ingest.reading import (
    OUTSIDE,
    NotRegularFile,
    OutsideRoots,
    hash_file,
    open_within,
    read_file,
    resolve_roots,
)
from rag.store import EdgeStore
from tests.ingest_app import ingest_app, wait_job
from tests.test_jobs import finished

BIN = Path(sys.executable).parent
SECRET = "The Velmire vault code is 4471."


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``root/`` (the allowed root) with a file and a folder, and ``outside/`` with a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "folder").mkdir(parents=True)
    (outside / "folder").mkdir(parents=True)
    (root / "folder" / "own.md").write_text("# Own\n\nThe bakery opens at six.\n")
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    (outside / "folder" / "own.md").write_text(f"# Secret\n\n{SECRET}\n")
    return {"root": root, "outside": outside}


def read(path: Path, roots: list[Path]) -> bytes:
    fd = open_within(str(path), resolve_roots(roots))
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def test_a_file_inside_the_roots_is_opened(tree: dict[str, Path]) -> None:
    assert b"bakery" in read(tree["root"] / "folder" / "own.md", [tree["root"]])


def test_a_link_as_the_last_component_to_outside_is_refused(tree: dict[str, Path]) -> None:
    link = tree["root"] / "x.md"
    link.symlink_to(tree["outside"] / "secret.md")
    with pytest.raises(OutsideRoots, match=OUTSIDE):
        read(link, [tree["root"]])
    with pytest.raises(OutsideRoots):
        read_file(str(link), 1 << 20, resolve_roots([tree["root"]]))
    with pytest.raises(OutsideRoots):
        hash_file(str(link), 1 << 20, resolve_roots([tree["root"]]))
    assert b"Velmire" in read(link, [tree["root"], tree["outside"]])  # inside another root


def test_a_link_as_a_folder_on_the_way_to_outside_is_refused(tree: dict[str, Path]) -> None:
    (tree["root"] / "away").symlink_to(tree["outside"] / "folder")
    with pytest.raises(OutsideRoots):
        read(tree["root"] / "away" / "own.md", [tree["root"]])


def test_links_that_stay_inside_the_roots_are_read_like_their_targets(
    tree: dict[str, Path],
) -> None:
    (tree["root"] / "same.md").symlink_to(tree["root"] / "folder" / "own.md")
    (tree["root"] / "alias").symlink_to("folder")
    assert b"bakery" in read(tree["root"] / "same.md", [tree["root"]])
    assert b"bakery" in read(tree["root"] / "alias" / "own.md", [tree["root"]])
    linked_root = tree["root"].parent / "root-link"  # a root named through a link
    linked_root.symlink_to(tree["root"])
    assert b"bakery" in read(linked_root / "folder" / "own.md", [linked_root])


def test_without_roots_links_are_followed_and_devices_are_still_refused(
    tree: dict[str, Path],
) -> None:
    link = tree["root"] / "x.md"
    link.symlink_to(tree["outside"] / "secret.md")
    assert b"Velmire" in read_file(str(link), 1 << 20).data
    (tree["root"] / "zero.txt").symlink_to("/dev/zero")
    with pytest.raises(NotRegularFile, match="character device"):
        read_file(str(tree["root"] / "zero.txt"), 1 << 20)
    found = discover([tree["root"]], 1 << 20)
    reasons = {Path(e.path).name: e.reason for e in found.skipped}
    assert reasons["zero.txt"] == "not a regular file: character device"


def test_a_folder_swapped_for_a_link_between_the_check_and_the_open_is_not_followed(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap lands right after the path was resolved and found inside: the walk meets the
    link with O_NOFOLLOW, resolves again, and finds the path outside."""
    folder = tree["root"] / "folder"
    resolve = os.path.realpath
    swapped: list[str] = []

    def resolve_then_swap(path: Any, *args: Any, **kwargs: Any) -> str:
        real = resolve(path, *args, **kwargs)
        if not swapped:
            staged = tree["root"] / ".staged"
            staged.symlink_to(tree["outside"] / "folder")
            os.rename(folder, tree["root"] / ".old")
            os.replace(staged, folder)  # atomically: the folder is a link from now on
            swapped.append(real)
        return real

    monkeypatch.setattr(reading.os.path, "realpath", resolve_then_swap)
    with pytest.raises(OutsideRoots):
        open_within(str(folder / "own.md"), (resolve(tree["root"]),))
    assert swapped == [os.path.join(resolve(tree["root"]), "folder", "own.md")]  # was inside


def test_a_file_swapped_for_a_link_between_the_check_and_the_open_is_not_followed(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tree["root"] / "folder" / "own.md"
    resolve = os.path.realpath
    calls: list[str] = []

    def resolve_then_swap(path: Any, *args: Any, **kwargs: Any) -> str:
        real = resolve(path, *args, **kwargs)
        if not calls:
            staged = tree["root"] / ".staged"
            staged.symlink_to(tree["outside"] / "secret.md")
            os.replace(staged, target)
        calls.append(real)
        return real

    monkeypatch.setattr(reading.os.path, "realpath", resolve_then_swap)
    with pytest.raises(OutsideRoots):
        read_file(str(target), 1 << 20, (resolve(tree["root"]),))
    assert len(calls) == 2  # resolved again after O_NOFOLLOW met the link


# -- the scenario: a job whose files are swapped for links after it counted them -------


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, Path]:
    """A data dir with a live service record, a root with a large file and two small ones (the
    large one sorts first, so the single worker is busy with it), and a secret outside."""
    data, root, outside = tmp_path / "data", tmp_path / "roots" / "team", tmp_path / "outside"
    for folder in (data, root, outside):
        folder.mkdir(parents=True)
    write_record(data, "http://127.0.0.1:9")
    rows = "".join(
        f"Row {k}: the Harwick depot ships crate {k} on day {k % 28}.\n" for k in range(400)
    )
    (root / "0-ledger.md").write_text("# Ledger\n\n" + rows)
    (root / "1-note.md").write_text("# Note\n\nThe Harwick depot opens at seven.\n")
    (root / "2-note.md").write_text("# Note\n\nThe Harwick depot closes at nine.\n")
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    return {"data": data, "root": root, "roots": root.parent, "outside": outside}


def swap_for_links(shared: dict[str, Path]) -> None:
    """Replace the two small files, atomically, by links out of the roots."""
    targets = {
        "1-note.md": shared["outside"] / "secret.md",
        "2-note.md": shared["data"] / "service.json",
    }
    for name, target in targets.items():
        staged = shared["root"] / f".{name}.link"
        staged.symlink_to(target)
        os.replace(staged, shared["root"] / name)


@pytest.fixture
def runner(shared: dict[str, Path], embedder: Embedder) -> Iterator[tuple[JobRunner, EdgeStore]]:
    store = EdgeStore(shared["data"])

    def syncs(index: str) -> FolderSync:
        return FolderSync(store, embedder, IndexSpec(name=index), limits=IngestLimits(workers=1))

    jobs = JobRunner(store, syncs)
    yield jobs, store
    jobs.close()
    store.close()


def swap_after_discovery(monkeypatch: pytest.MonkeyPatch, shared: dict[str, Path]) -> list[int]:
    """The sync lists its files as usual; the links are swapped in right after it counted them."""
    counted: list[int] = []

    def discover_then_swap(*args: Any, **kwargs: Any) -> Discovery:
        found = discover(*args, **kwargs)
        counted.append(len(found.files))
        swap_for_links(shared)
        return found

    monkeypatch.setattr(sync_module, "discover", discover_then_swap)
    return counted


def leaked(store: EdgeStore, index: str, data: Path) -> list[str]:
    record = read_record(data)
    assert record is not None
    texts = [str(p["text"]) for _, p in store.scan(index, ["text"])]
    return [t for t in texts if "Velmire" in t or record.token in t or '"token"' in t]


def test_links_swapped_in_after_the_job_counted_the_files_are_skipped(
    runner: tuple[JobRunner, EdgeStore],
    shared: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parse worker's open refuses them: nothing of the secret or the token is indexed."""
    jobs, store = runner
    counted = swap_after_discovery(monkeypatch, shared)
    job = finished(jobs, jobs.sync("docs", [shared["root"]], within=[shared["roots"]]).id)
    assert counted == [3]
    assert job["state"] == "succeeded", job
    report = job["report"]
    skipped = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert skipped == {"1-note.md": OUTSIDE, "2-note.md": OUTSIDE}
    assert (report["added"], report["failed"]) == (1, [])
    assert leaked(store, "docs", shared["data"]) == []


def test_links_swapped_for_files_already_indexed_are_skipped_on_the_next_run(
    runner: tuple[JobRunner, EdgeStore],
    shared: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Known files are hashed in the syncing process: that open refuses the links too."""
    jobs, store = runner
    first = finished(jobs, jobs.sync("docs", [shared["root"]], within=[shared["roots"]]).id)
    assert first["report"]["added"] == 3
    swap_after_discovery(monkeypatch, shared)
    job = finished(jobs, jobs.sync("docs", [shared["root"]], within=[shared["roots"]]).id)
    assert job["state"] == "succeeded", job
    skipped = {Path(e["path"]).name: e["reason"] for e in job["report"]["skipped_files"]}
    assert skipped == {"1-note.md": OUTSIDE, "2-note.md": OUTSIDE}
    assert (job["report"]["unchanged"], job["report"]["updated"]) == (1, 0)
    assert leaked(store, "docs", shared["data"]) == []


# -- rag-ingest: held to the folders it is given, unless --follow-links ----------------------


def rag_ingest(folder: Path, data: Path, *args: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [str(BIN / "rag-ingest"), str(folder), "--json", *args],
        env={**base, "RAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "RAG_INGEST_WORKERS": "1"},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_rag_ingest_skips_links_out_of_its_folders_unless_told_to_follow_them(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    (tree["root"] / "x.md").symlink_to(tree["outside"] / "secret.md")
    (tree["root"] / "away").symlink_to(tree["outside"] / "folder")
    (tree["root"] / "same.md").symlink_to(tree["root"] / "folder" / "own.md")
    held = rag_ingest(tree["root"], tmp_path / "held")
    skipped = {Path(e["path"]).name: e["reason"] for e in held["skipped_files"]}
    assert skipped == {"x.md": OUTSIDE, "away": OUTSIDE}
    assert held["added"] == 2  # folder/own.md and same.md
    followed = rag_ingest(tree["root"], tmp_path / "followed", "--follow-links")
    assert (followed["added"], followed["skipped_files"]) == (4, [])


# -- over HTTP: who may follow links out of the folders named --------------------------------


def test_a_sync_over_http_follows_links_out_of_its_folders_only_for_a_caller_that_may_say_so(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    """An admin key is held to the folders it names unless it asks for follow_links; a write
    key stays inside RAG_INGEST_ROOTS whatever it asks."""
    (tree["root"] / "x.md").symlink_to(tree["outside"] / "secret.md")
    with ingest_app(tmp_path / "data", ingest_roots=[tree["root"]]) as app:

        def sync(key: str, **body: Any) -> dict[str, Any]:
            with app.client(key) as client:
                response = client.post(
                    "/v1/indexes/default/sync", json={"folders": [str(tree["root"])], **body}
                )
                assert response.status_code == 202, response.text
                job = wait_job(client, response.headers["location"])
            assert job["state"] == "succeeded", job
            return {Path(e["path"]).name: e["reason"] for e in job["report"]["skipped_files"]}

        assert sync(app.admin) == {"x.md": OUTSIDE}
        assert sync(app.writer, follow_links=True) == {"x.md": OUTSIDE}
        assert sync(app.admin, follow_links=True) == {}
        with app.client() as client:
            listed = client.get("/v1/indexes/default/documents").json()["documents"]
        assert "x.md" in [d["source"] for d in listed]
