"""The data dir holds the documents' text (uploads, the store's payloads and WAL) and the keys:
nothing under it is readable by another local user, after `rag-ingest`, `rag-keys` and an
upload through `rag-api` (the real commands: they set the umask; the library creates its
folders 0700 and uploads 0600 whatever the umask)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rag.store import private_dir
from tests.ingest_app import NO_ENGINE, wait_job
from tests.service import start_api

BIN = Path(sys.executable).parent


def readable_by_others(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{stat.filemode(mode)} {path.relative_to(root.parent)}")
    return found


def test_nothing_under_the_data_dir_is_readable_by_other_users(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "salaries.md").write_text("# Salaries\n\nThe Quillmore clerk earns 41,000.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_DATA_DIR=str(data), HF_HUB_OFFLINE="1", RAG_INGEST_WORKERS="1")
    ingested = subprocess.run(
        [str(BIN / "rag-ingest"), str(docs)], env=env, capture_output=True, text=True, timeout=600
    )
    assert ingested.returncode == 0, ingested.stderr
    made = subprocess.run(
        [str(BIN / "rag-keys"), "create", "uploader", "--index", "default", "--write"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    api, url = start_api(tmp_path, RAG_LLM_URL=NO_ENGINE, RAG_INGEST_WORKERS="1")
    try:
        deadline = time.monotonic() + 180
        while not (data / "service.json").exists():
            assert api.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            files = [
                ("files", ("payroll.md", io.BytesIO(b"# Payroll\n\nThe keeper earns 38,000.\n")))
            ]
            response = client.post("/v1/indexes/default/documents", files=files)
            assert response.status_code == 202, response.text
            assert wait_job(client, response.headers["location"])["state"] == "succeeded"
    finally:
        api.terminate()
        api.wait(timeout=60)
    assert (data / "uploads" / "default" / "payroll.md").is_file()
    assert list((data / "indexes" / "default" / "shard").rglob("*"))
    assert readable_by_others(data) == []


def test_the_library_creates_its_folders_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
