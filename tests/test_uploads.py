"""Uploads are kept all or nothing, only when they are documents, within the index's quota, and
deleting one over HTTP removes its file (the engine is not needed: tests/ingest_app.py)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import rag.ingest.server_paths as server_paths
from rag.ingest import BadPathError, UnsupportedUploadError, save_uploads
from tests.ingest_app import IngestApp, ingest_app, upload, wait_job

NOTE = b"# Weir\n\nThe Corrow weir is 12 metres wide.\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestApp]:
    with ingest_app(tmp_path_factory.mktemp("uploads") / "data", uploads_max_mb=0.05) as served:
        yield served


@pytest.fixture(autouse=True)
def empty_uploads(app: IngestApp) -> Iterator[None]:
    yield
    shutil.rmtree(app.uploads, ignore_errors=True)


def kept(app: IngestApp) -> list[str]:
    return sorted(p.name for p in app.uploads.iterdir()) if app.uploads.exists() else []


def succeeded(app: IngestApp, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    with app.client() as client:
        job = wait_job(client, response.headers["location"])
    assert job["state"] == "succeeded", job
    return job


def test_a_name_of_up_to_255_bytes_is_kept_and_synced(app: IngestApp) -> None:
    for length in (241, 255):
        name = "w" * (length - 3) + ".md"
        job = succeeded(app, upload(app, (name, NOTE)))
        assert job["report"]["failed"] == []
        assert name in kept(app)
    assert not [n for n in kept(app) if n.startswith(".")]  # no temporary file left


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("w" * 253 + ".md", "256 bytes long, over the 255"),
        ("..", "not a file name"),
        (".hidden.md", "not a file name"),
    ],
)
def test_a_bad_name_is_refused_before_any_file_of_the_request_is_written(
    app: IngestApp, name: str, message: str
) -> None:
    response = upload(app, ("first.md", NOTE), (name, NOTE))
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert kept(app) == []


def test_a_name_with_a_nul_byte_is_refused(app: IngestApp) -> None:
    """Sent as raw bytes (httpx would percent-encode it into a harmless name)."""
    part = b'Content-Disposition: form-data; name="files"; filename="%s"\r\n\r\n%s\r\n'
    body = b"".join(b"--b0undary\r\n" + part % (name, NOTE) for name in (b"first.md", b"a\x00b.md"))
    with app.client() as client:
        response = client.post(
            "/v1/indexes/default/documents",
            content=body + b"--b0undary--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
    assert response.status_code == 422, response.text
    assert "not a file name" in response.json()["error"]["message"]
    assert kept(app) == []


def test_a_file_that_is_not_a_document_is_refused_with_the_types_accepted(app: IngestApp) -> None:
    response = upload(app, ("first.md", NOTE), ("tool.exe", b"MZ\x90\x00"))
    assert response.status_code == 415, response.text
    body = response.json()["error"]
    assert body["type"] == "unsupported_media_type"
    assert "(.exe)" in body["message"]
    assert ".md" in body["message"]
    assert ".pdf" in body["message"]
    assert kept(app) == []


def test_an_upload_past_the_index_quota_is_refused_and_a_replaced_file_does_not_count(
    app: IngestApp,
) -> None:
    """The fixture's quota is 50 kB (RAG_UPLOADS_MAX_MB=0.05)."""
    half = b"# Log\n\n" + b"The Corrow weir was inspected today.\n" * 800  # ~30 kB
    succeeded(app, upload(app, ("log.md", half)))
    over = upload(app, ("second.md", half))
    assert over.status_code == 413, over.text
    assert over.json()["error"]["type"] == "upload_quota_exceeded"
    assert "RAG_UPLOADS_MAX_MB" in over.json()["error"]["message"]
    assert kept(app) == ["log.md"]
    succeeded(app, upload(app, ("log.md", half)))  # replacing it frees its own size


def test_a_request_that_fails_while_writing_leaves_none_of_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error on the second file (a scripted fake: the real one is an I/O error) removes
    the first; a file of the same name kept before stays as it was."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "a.md").write_bytes(b"# Old\n\nkept\n")
    copy = shutil.copyfileobj
    calls: list[int] = []

    def fail_second(src: Any, dst: Any, length: int = 0) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        copy(src, dst, length)

    monkeypatch.setattr(server_paths.shutil, "copyfileobj", fail_second)
    with pytest.raises(OSError, match="Input/output"):
        save_uploads(folder, [("a.md", io.BytesIO(NOTE)), ("b.md", io.BytesIO(NOTE))])
    assert sorted(p.name for p in folder.iterdir()) == ["a.md"]
    assert (folder / "a.md").read_bytes() == b"# Old\n\nkept\n"


def test_names_are_checked_by_the_library_too(tmp_path: Path) -> None:
    with pytest.raises(BadPathError):
        save_uploads(tmp_path, [("x" * 300 + ".md", io.BytesIO(NOTE))])
    with pytest.raises(UnsupportedUploadError):
        save_uploads(tmp_path, [("archive.unknown", io.BytesIO(NOTE))])
    assert list(tmp_path.iterdir()) == []


def test_deleting_an_upload_removes_its_file_even_when_it_failed_to_parse(app: IngestApp) -> None:
    job = succeeded(app, upload(app, ("good.md", NOTE), ("broken.pdf", b"%PDF-1.7 not really")))
    assert [Path(f["path"]).name for f in job["report"]["failed"]] == ["broken.pdf"]
    assert kept(app) == ["broken.pdf", "good.md"]
    with app.client() as client:
        for name in ("broken.pdf", "good.md"):
            response = client.delete(f"/v1/indexes/default/documents/{quote(name)}")
            assert response.status_code == 202, response.text
            assert wait_job(client, response.headers["location"])["state"] == "succeeded"
        assert kept(app) == []
        listed = client.get("/v1/indexes/default/documents").json()["documents"]
        assert "good.md" not in [d["source"] for d in listed]
        gone = client.delete("/v1/indexes/default/documents/broken.pdf")
        assert gone.status_code == 404
        outside = client.delete(f"/v1/indexes/default/documents/{quote('../keys.json', safe='')}")
        assert outside.status_code == 404
    assert (app.data_dir / "keys.json").exists()


def test_a_delete_naming_a_nul_byte_is_not_found_not_a_server_error(app: IngestApp) -> None:
    succeeded(app, upload(app, ("good.md", NOTE)))
    with app.client() as client:
        for path, params in [
            ("good.md", {"root": "/data\x00/uploads"}),
            (quote("good\x00.md"), {}),
        ]:
            response = client.delete(f"/v1/indexes/default/documents/{path}", params=params)
            assert response.status_code == 404, response.text
