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


def _scan_folder(base: Path, name: str) -> Path:
    from tests.drive import text_image

    folder = _folder(base, name)
    text_image(["The ferry leaves at nine."]).save(folder / "photo.png")  # type: ignore[attr-defined]
    return folder


def check_ocr(base: Path) -> None:
    folder = _scan_folder(base, "ocr")
    report = rag_ingest(folder, base / "ocr-data", RAG_OCR="off")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert reasons["photo.png"] == "image (OCR is off)"
    assert report["added"] == 3
    assert report["failed"] == []


def check_ocr_languages(base: Path) -> None:
    folder = _scan_folder(base, "ocr-languages")
    report = rag_ingest(folder, base / "ocr-languages-data", RAG_OCR_LANGUAGES="qaa")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert "qaa" in reasons["photo.png"]  # a language tesseract has no data for


def check_ocr_page_timeout(base: Path) -> None:
    folder = _scan_folder(base, "ocr-timeout")
    report = rag_ingest(folder, base / "ocr-timeout-data", RAG_OCR_PAGE_TIMEOUT_S="0.001")
    entries = report["skipped_files"] + report["failed"]
    reasons = {Path(e["path"]).name: e["reason"] for e in entries}
    assert "timed out" in reasons["photo.png"]


def _archive(folder: Path, members: int, member_bytes: int) -> Path:
    import zipfile

    path = folder / "bundle.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(members):
            archive.writestr(f"part-{n}.txt", b"The quay is dredged in spring. " * member_bytes)
    return path


def check_archive_max_members(base: Path) -> None:
    folder = _folder(base, "archive-members")
    _archive(folder, members=3, member_bytes=10)
    report = rag_ingest(folder, base / "archive-members-data", RAG_ARCHIVE_MAX_MEMBERS="2")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert "archive over its limits" in reasons["bundle.zip"]
    assert report["added"] == 3


def check_archive_max_mb(base: Path) -> None:
    folder = _folder(base, "archive-size")
    _archive(folder, members=1, member_bytes=70_000)  # 2.2 MB uncompressed
    report = rag_ingest(folder, base / "archive-size-data", RAG_ARCHIVE_MAX_MB="1")
    reasons = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert "archive over its limits" in reasons["bundle.zip"]


def check_min_free_mb(base: Path) -> None:
    """A reserve larger than the disk: rag-ingest refuses before it creates the index (exit 3,
    the setting named, no traceback)."""
    folder, data = _folder(base, "min-free"), base / "min-free-data"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [str(BIN / "rag-ingest"), str(folder)],
        env={
            **environ,
            "RAG_DATA_DIR": str(data),
            "HF_HUB_OFFLINE": "1",
            "RAG_MIN_FREE_MB": "1000000000",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "RAG_MIN_FREE_MB" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data / "indexes" / "default").exists()
