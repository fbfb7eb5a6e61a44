"""A data folder that refuses writes (a read-only file system) is a clear 503 `not_writable`
with the reason, never a 500; nothing is left behind, and `rag-keys` says so too.

Read-only for real: a read-only bind mount (root, with the right to mount), or the folder's
mode for another user (root writes through any mode).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ingest.keys_cli import main as keys_main
from tests.test_key_gate import UPLOAD, Served, bearer, serve


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs a read-only bind mount (mount: {mounted.stderr.decode().strip()})")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(folder)]
        subprocess.run(remount, check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serve(tmp_path, monkeypatch)


def post_upload(served: Served, key: str) -> httpx.Response:
    with httpx.Client(base_url=served.running.url, headers=bearer(key), timeout=60) as client:
        return client.post(UPLOAD, files=[("files", ("a.txt", b"one")), ("files", ("b.txt", b"2"))])


def assert_not_writable(response: httpx.Response, folder: Path) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "not_writable"
    assert error["message"].startswith("the uploads folder is not writable: ")
    assert str(folder) in error["message"]
    assert "Read-only file system" in error["message"] or "ermission" in error["message"]
    assert int(response.headers["retry-after"]) > 0


def test_an_upload_into_a_read_only_uploads_folder_is_503_not_writable(served: Served) -> None:
    writer = served.keys.create("writer", ["default"], write=True)
    folder = served.running.app.state.settings.data_dir / "uploads" / "default"
    with read_only(folder):
        assert_not_writable(post_upload(served, writer), folder)
    assert list(folder.iterdir()) == []  # nothing half-written, not even a temporary part
    assert post_upload(served, writer).status_code == 202  # writable again: accepted


def test_an_upload_into_a_read_only_data_dir_is_503_not_writable(served: Served) -> None:
    writer = served.keys.create("writer", ["default"], write=True)
    data_dir = served.running.app.state.settings.data_dir
    with read_only(data_dir):  # the uploads folder is yet to be made
        assert_not_writable(post_upload(served, writer), data_dir / "uploads" / "default")
        with httpx.Client(base_url=served.running.url, headers=bearer(writer)) as client:
            assert client.get("/healthz").status_code == 200
    assert not (data_dir / "uploads").exists()


def test_rag_keys_in_a_read_only_data_dir_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with read_only(data_dir):
        done = CliRunner().invoke(
            keys_main, ["create", "ui", "--index", "default"], env={"RAG_DATA_DIR": str(data_dir)}
        )
    assert done.exit_code == 2
    assert done.output.startswith(f"Error: the key file {data_dir / 'keys.json'} cannot be written")
    assert "Traceback" not in done.output
