"""A shared drive in every format we read: `rag-ingest` reads it, `/ask` finds each fact.

The drive (tests/drive.py) holds Office files, mail with an attachment, an e-book, a notebook,
OpenDocument, RTF, an archive, a scan and a photo (OCR), a table PDF, CSV/TSV, JSON and YAML,
and files we cannot read (password-protected, binary Office formats, Outlook mail), which are
skipped with their reasons: the run exits 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.config import Settings
from rag.ingest import file_type
from tests.drive import FACTS, SKIPPED, Fact, statement_rows, tools_present, write_drive
from tests.service import RunningService
from tests.test_cli import run

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not tools_present():
        if os.environ.get("CI") == "true":
            pytest.fail("tesseract is missing in CI (.ci/run installs tesseract-ocr)")
        pytest.skip("OCR needs tesseract: sudo apt-get install tesseract-ocr tesseract-ocr-eng")
    base = tmp_path_factory.mktemp("drive")
    root = write_drive(base / "drive")
    done = run("rag-ingest", root, "--json", data_dir=base / "data")
    return {
        "root": root,
        "data": base / "data",
        "code": done.returncode,
        "stderr": done.stderr,
        "report": json.loads(done.stdout) if done.stdout else {},
    }


@pytest.fixture(scope="module")
def drive_service(drive: dict[str, Any], engine_url: str) -> Iterator[RunningService]:
    from api.app import create_app

    settings = Settings(data_dir=drive["data"], llm_url=engine_url, llm_timeout=60)
    with RunningService(create_app(settings)) as running:
        yield running


def test_a_drive_of_every_format_syncs_with_exit_0(drive: dict[str, Any]) -> None:
    report = drive["report"]
    assert drive["code"] == 0, drive["stderr"]
    assert report["failed"] == []
    files = {Path(f.file).name for f in FACTS}
    assert report["added"] == len(files)
    assert "Traceback" not in drive["stderr"]


def test_protected_and_unsupported_files_are_skipped_with_their_reason(
    drive: dict[str, Any],
) -> None:
    skipped = {Path(e["path"]).name: e["reason"] for e in drive["report"]["skipped_files"]}
    for name, reason in SKIPPED.items():
        assert name in skipped, f"{name} was not skipped"
        assert reason in skipped[name]


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: f"{f.file}:{f.text}")
def test_each_fact_of_the_drive_is_cited_by_ask(drive_service: RunningService, fact: Fact) -> None:
    with drive_service.client() as client:
        response = client.post("/ask", json={"question": fact.question, "max_tokens": 8})
    assert response.status_code == 200, response.text
    citations = response.json()["citations"]
    holding = [c for c in citations if fact.text in c["text"]]
    assert holding, f"no citation holds {fact.text!r}: {[c['source'] for c in citations]}"
    best = holding[0]
    assert best["source"].endswith(fact.source or fact.file)
    assert fact.location in (best["location"] or "")
    assert best["ocr"] is fact.ocr


@pytest.mark.parametrize("kind", ["docx", "pptx", "xlsx", "eml", "zip"])
def test_a_filter_on_a_document_type_keeps_only_that_type(
    drive_service: RunningService, kind: str
) -> None:
    body = {"question": "What is the budget?", "max_tokens": 1, "top_k": 20}
    with drive_service.client() as client:
        response = client.post("/ask", json={**body, "filters": {"file_types": [kind]}})
    assert response.status_code == 200, response.text
    sources = [c["source"] for c in response.json()["citations"]]
    assert sources, f"no passage of type {kind}"
    # The file a passage comes from: a member's source runs through its archive or mail.
    assert all(any(file_type(Path(p)) == kind for p in Path(s).parts) for s in sources), sources


def test_a_table_keeps_its_header_in_every_chunk(drive_service: RunningService) -> None:
    question = "What is the 2024 travel budget of the Nordics region?"
    with drive_service.client() as client:
        citations = client.post("/ask", json={"question": question, "max_tokens": 4}).json()[
            "citations"
        ]
    row = next(c for c in citations if "318,500" in c["text"])
    assert row["text"].splitlines()[0] == "| Region | 2024 travel budget |"
    assert "| Nordics | 318,500 |" in row["text"].splitlines()


def test_no_chunk_boundary_falls_inside_a_number_or_a_row_of_the_table_pdf(
    drive_service: RunningService,
) -> None:
    store = drive_service.app.state.services.store  # the service holds the index open
    texts = [
        p["text"]
        for _, p in store.scan("default", ["source", "text"])
        if p["source"] == "statement.pdf"
    ]
    rows = {" ".join(row.split()) for row in statement_rows()}
    assert len(texts) > 1
    for text in texts:
        for line in text.splitlines():
            assert " ".join(line.split()) in rows, f"a chunk cuts a row: {line!r}"
