"""The commands end to end, as a user runs them: real processes, real store, real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SEC_DIR, require_shared
from tests.documents import write_corpus, write_truncated_pdf
from tests.service import free_port

BIN = Path(sys.executable).parent


def run(
    command: str, *args: str | Path, data_dir: Path, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **extra_env}
    return subprocess.run(
        [str(BIN / command), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_ingest_reports_a_corrupt_pdf_and_ingests_the_rest(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs)
    write_truncated_pdf(docs / "broken.pdf", "This PDF was cut short. " * 40)
    result = run("rag-ingest", docs, "--json", data_dir=tmp_path / "data")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == 5
    assert report["skipped"] == 1
    assert [f["path"] for f in report["failed"]] == [str(docs / "broken.pdf")]
    assert "PDF" in report["failed"][0]["reason"]
    assert "Traceback" not in result.stderr

    again = json.loads(run("rag-ingest", docs, "--json", data_dir=tmp_path / "data").stdout)
    assert (again["unchanged"], again["chunks_written"]) == (5, 0)


def test_an_unreachable_embedding_service_is_reported_as_unavailable_not_a_usage_error(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run("rag-ingest", docs, data_dir=tmp_path / "data", RAG_EMBED_URL=down)
    assert result.returncode == 3, result.stderr
    assert "embedding service" in result.stderr
    assert "Traceback" not in result.stderr


def test_index_commands_list_show_and_drop(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs)
    data = tmp_path / "data"
    ingest = run("rag-ingest", docs, "--index", "handbook", data_dir=data)
    assert ingest.returncode == 0, ingest.stderr
    assert "5 added" in ingest.stdout
    assert run("rag-index", "list", data_dir=data).stdout.split() == ["handbook"]
    shown = json.loads(run("rag-index", "show", "handbook", "--json", data_dir=data).stdout)
    assert shown["embedder"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "dim": 384,
        "max_tokens": 254,
    }
    assert shown["files"] == 5
    assert shown["chunks"] == sum(f["chunks"] for f in shown["file_list"])
    assert shown["size_bytes"] > 0
    assert {f["path"] for f in shown["file_list"]} >= {"handbook.md", "reports/example-q1.pdf"}
    assert run("rag-index", "drop", "handbook", "--yes", data_dir=data).returncode == 0
    assert run("rag-index", "list", data_dir=data).stdout.strip() == ""


def test_user_mistakes_get_a_message_not_a_traceback(tmp_path: Path) -> None:
    missing = run("rag-ingest", tmp_path / "nowhere", data_dir=tmp_path / "data")
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_name = run("rag-ingest", tmp_path, "--index", "../escape", data_dir=tmp_path / "data")
    assert bad_name.returncode == 2
    assert "invalid index name" in bad_name.stderr
    unknown = run("rag-index", "show", "nothing", data_dir=tmp_path / "data")
    assert unknown.returncode == 2
    assert "does not exist" in unknown.stderr


@pytest.mark.shared_data
def test_real_10q_filings_sync_then_one_changes_and_one_goes(tmp_path: Path) -> None:
    """The acceptance scenario on two real filings: unchanged, then 1 updated and 1 deleted."""
    sec = require_shared(SEC_DIR)
    docs = tmp_path / "sec"
    docs.mkdir()
    for name in ("2022 Q3 AAPL.pdf", "2023 Q3 AAPL.pdf"):
        shutil.copy(sec / name, docs / name)
    (docs / "notes.md").write_text("# Notes\n\nFiscal calendars differ by company.\n", "utf-8")
    data = tmp_path / "data"
    first = json.loads(run("rag-ingest", docs, "--json", data_dir=data).stdout)
    count = json.loads(run("rag-index", "show", "default", "--json", data_dir=data).stdout)
    second = json.loads(run("rag-ingest", docs, "--json", data_dir=data).stdout)
    assert (second["unchanged"], second["chunks_written"]) == (3, 0)
    recount = json.loads(run("rag-index", "show", "default", "--json", data_dir=data).stdout)
    assert recount["chunks"] == count["chunks"] == first["chunks_written"]

    (docs / "notes.md").write_text("# Notes\n\nQuarters end on the last Saturday.\n", "utf-8")
    (docs / "2022 Q3 AAPL.pdf").unlink()
    third = json.loads(run("rag-ingest", docs, "--json", data_dir=data).stdout)
    assert (third["updated"], third["deleted"], third["unchanged"]) == (1, 1, 1)
    after = json.loads(run("rag-index", "show", "default", "--json", data_dir=data).stdout)
    before = {f["path"]: f["sha256"] for f in recount["file_list"]}
    now = {f["path"]: f["sha256"] for f in after["file_list"]}
    assert sorted(now) == ["2023 Q3 AAPL.pdf", "notes.md"]
    assert now["2023 Q3 AAPL.pdf"] == before["2023 Q3 AAPL.pdf"]
    assert now["notes.md"] != before["notes.md"]
