"""Checks that the ingest settings reach rag-ingest: each runs the command with one setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.hostile import write_endless_pdf

BIN = Path(sys.executable).parent


def rag_ingest(folder: Path, data: Path, **env: str) -> dict[str, Any]:
    """`rag-ingest FOLDER --json` with ``env`` on top of a clean environment; the report."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [str(BIN / "rag-ingest"), str(folder), "--json"],
        env={**base, "RAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _folder(base: Path, name: str) -> Path:
    folder = base / name
    folder.mkdir(parents=True)
    for n in range(3):
        (folder / f"note-{n}.md").write_text(f"# Note {n}\n\nThe kiln fires on day {n}.\n")
    return folder


def check_max_file_mb(base: Path) -> None:
    folder = _folder(base, "max-file")
    (folder / "big.txt").write_bytes(b"word " * 300_000)  # 1.5 MB
    report = rag_ingest(folder, base / "max-file-data", RAG_MAX_FILE_MB="1")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert "RAG_MAX_FILE_MB" in reasons["big.txt"]
    assert report["added"] == 3


def check_ingest_workers(base: Path) -> None:
    folder = _folder(base, "workers")
    assert rag_ingest(folder, base / "workers-data", RAG_INGEST_WORKERS="2")["workers"] == 2


def check_parse_timeout(base: Path) -> None:
    folder = _folder(base, "timeout")
    write_endless_pdf(folder / "endless.pdf")
    report = rag_ingest(folder, base / "timeout-data", RAG_PARSE_TIMEOUT_S="2")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["failed"]}
    assert "RAG_PARSE_TIMEOUT_S" in reasons["endless.pdf"]
    assert report["added"] == 3


def check_worker_memory(base: Path) -> None:
    folder = base / "memory"
    folder.mkdir()
    (folder / "long.txt").write_text("A sentence about the harbour master's ledger. " * 100_000)
    report = rag_ingest(folder, base / "memory-data", RAG_WORKER_MEMORY_MB="128")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["failed"]}
    assert "RAG_WORKER_MEMORY_MB" in reasons["long.txt"]
