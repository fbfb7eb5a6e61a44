"""Ingesting while serving: `rag-api` on the embedded defaults owns the store, and `rag-ingest`,
curl uploads and the HTTP job routes write through it; asks go on meanwhile.

One real `rag-api` process (the real engine, the real MiniLM, Qdrant Edge) serves the module,
with ``<base>/roots`` as its RAG_INGEST_ROOTS. Keys are added to its key file by the tests that
need them and revoked after, the file removed: the running service picks the file up without a
restart, and is keyless again afterwards. Writing always needs a write key or the local token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from rag.embed import Embedder
from rag.guard.service_record import TOKEN_HEADER, read_record
from tests.ingest_served import (
    HARBOUR,
    LIGHTHOUSE,
    Served,
    cited,
    one_document,
    rag_ingest,
    serve,
    service_keys,
    upload,
    wait_job,
)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[Served]:
    yield from serve(tmp_path_factory, embedder, engine_url)


@pytest.fixture
def keys(served: Served) -> Iterator[dict[str, str]]:
    """Keys in the running service's key file; revoked and removed afterwards (keyless again)."""
    yield from service_keys(served)


def test_rag_ingest_hands_the_sync_to_the_running_service_and_ask_cites_the_new_file(
    served: Served,
) -> None:
    folder = one_document(served.base / "handed", "harbour.md", HARBOUR)
    done = rag_ingest(served, str(folder), "--json")
    assert done.returncode == 0, done.stderr
    assert "runs the sync" in done.stderr
    report = json.loads(done.stdout)
    assert (report["files_seen"], report["added"], report["failed"]) == (1, 1, [])
    assert report["chunks_written"] >= 1
    assert "harbour.md" in cited(served, "What is the Quillmore harbour levy per vessel?")
    again = rag_ingest(served, str(folder))
    assert again.returncode == 0, again.stderr
    assert "1 files: 0 added, 0 updated, 1 unchanged" in again.stdout


def test_an_upload_with_curl_is_synced_and_cited_without_a_restart(
    served: Served, keys: dict[str, str]
) -> None:
    path = served.base / "curl" / "lighthouse.md"
    path.parent.mkdir()
    path.write_text(LIGHTHOUSE)
    status, headers, body = upload(served, path, key=keys["writer"])
    assert status == 202, (headers, body)
    assert headers["location"] == f"/v1/jobs/{json.loads(body)['id']}"
    with served.client(keys["writer"]) as client:
        job = wait_job(client, headers["location"])
    assert job["state"] == "succeeded", job
    assert job["report"]["added"] == 1
    kept = served.data_dir / "uploads" / "default" / "lighthouse.md"
    assert kept.read_text() == LIGHTHOUSE
    question = "How often is the Brackenfold lighthouse lamp trimmed?"
    assert "lighthouse.md" in cited(served, question, keys["reader"])


def test_a_large_upload_is_kept_and_delete_removes_its_passages_and_its_copy(
    served: Served, keys: dict[str, str]
) -> None:
    path = served.base / "deleting" / "ferry notes.md"
    path.parent.mkdir()
    filler = "".join(f"Timetable row {k}: no sailing on this day.\n" for k in range(2000))
    path.write_text("# Ferry\n\nThe Wendlow ferry leaves at 06:40 from pier nine.\n" + filler)
    assert path.stat().st_size > 65536  # past RAG_MAX_REQUEST_BYTES: uploads have their own
    status, headers, _ = upload(served, path, key=keys["writer"])
    assert status == 202
    with served.client(keys["writer"]) as client:
        assert wait_job(client, headers["location"])["state"] == "succeeded"
        listed = client.get("/v1/indexes/default/documents").json()["documents"]
        chunks = sum(d["chunks"] for d in listed if d["source"] == "ferry notes.md")
        assert chunks >= 1
        response = client.delete(f"/v1/indexes/default/documents/{quote('ferry notes.md')}")
        assert response.status_code == 202, response.text
        job = wait_job(client, response.headers["location"])
        assert job["report"]["chunks_deleted"] == chunks
        listed = client.get("/v1/indexes/default/documents").json()["documents"]
        assert "ferry notes.md" not in [d["source"] for d in listed]
        again = client.delete(f"/v1/indexes/default/documents/{quote('ferry notes.md')}")
        assert again.status_code == 404
    assert not (served.data_dir / "uploads" / "default" / "ferry notes.md").exists()
    assert "ferry notes.md" not in cited(
        served, "When does the Wendlow ferry leave?", keys["reader"]
    )


def test_an_ask_is_answered_while_a_job_runs_and_the_job_reports_progress(served: Served) -> None:
    folder = served.base / "many"
    for k in range(150):
        doc = folder / f"part-{k // 50}" / f"note-{k}.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"Note {k}, line {j}: the depot at bay {k} holds {j * k} crates." for j in range(30)
        ]
        doc.write_text(f"# Note {k}\n\n" + "\n".join(lines) + "\n")
    with served.client(local=True) as client:
        response = client.post(
            "/v1/indexes/default/sync", json={"folders": [str(folder)], "delete": False}
        )
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        deadline = time.monotonic() + 120
        while (job := client.get(location).json())["progress"]["files_done"] == 0:
            assert job["state"] in ("queued", "running"), job
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["progress"]["files_total"] == 150
        answer = client.post(
            "/ask", json={"question": "What is the travel budget?", "max_tokens": 4}
        )
        assert answer.status_code == 200, answer.text
        assert client.get(location).json()["state"] == "running", "the ask waited for the job"
        job = wait_job(client, location)
    assert job["state"] == "succeeded", job
    progress, report = job["progress"], job["report"]
    assert progress["files_done"] == progress["files_total"] == report["files_seen"] == 150
    assert progress["bytes_done"] == progress["bytes_total"] > 0
    assert report["added"] == 150
    assert report["failed"] == []
    assert set(report) >= {"unchanged", "chunks_written", "stages", "seconds", "skipped_files"}


def test_a_sync_without_the_local_token_or_an_admin_key_stays_inside_the_ingest_roots(
    served: Served, keys: dict[str, str]
) -> None:
    folder = one_document(served.base / "outside", "a.md", "# A\n\nalpha\n")
    with served.client(keys["writer"]) as client:
        response = client.post("/v1/indexes/default/sync", json={"folders": [str(folder)]})
        assert response.status_code == 403, response.text
        assert "RAG_INGEST_ROOTS" in response.json()["error"]["message"]
        relative = client.post("/v1/indexes/default/sync", json={"folders": ["docs"]})
        assert relative.status_code == 422
        assert client.get("/v1/jobs/0123456789abcdef").status_code == 404


def test_a_symlink_inside_the_ingest_roots_does_not_lead_out_of_them(
    served: Served, keys: dict[str, str]
) -> None:
    secret = served.base / "secret"
    (secret / "folder").mkdir(parents=True)
    (secret / "secret.md").write_text("# Secret\n\nThe Velmire vault code is 4471.\n")
    (secret / "folder" / "inner.md").write_text("# Inner\n\nThe Velmire safe is green.\n")
    root = served.base / "roots" / "linked"
    root.mkdir()
    (root / "own.md").write_text("# Own\n\nThe Velmire bakery opens at six.\n")
    (root / "x.md").symlink_to(secret / "secret.md")
    (root / "sub").symlink_to(secret / "folder")
    with served.client(keys["writer"]) as client:
        response = client.post("/v1/indexes/default/sync", json={"folders": [str(root)]})
        assert response.status_code == 202, response.text
        job = wait_job(client, response.headers["location"])
    assert job["state"] == "succeeded", job
    report = job["report"]
    assert report["added"] == 1
    skipped = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    assert skipped == {"x.md": "outside the ingest roots", "sub": "outside the ingest roots"}


def test_writing_without_a_key_is_refused_even_while_the_service_has_no_keys(
    served: Served,
) -> None:
    folder = one_document(served.base / "roots" / "anonymous", "a.md", "# A\n\nalpha\n")
    status, _, body = upload(served, folder / "a.md")
    assert status == 401
    assert "rag-keys create NAME --index default --write" in json.loads(body)["error"]["message"]
    with served.client() as client:
        sync = client.post("/v1/indexes/default/sync", json={"folders": [str(folder)]})
        assert sync.status_code == 401
        assert client.delete("/v1/indexes/default/documents/a.md").status_code == 401
        assert client.get("/v1/indexes/default/documents").status_code == 200  # reading is open
        not_ascii = {TOKEN_HEADER.encode(): "jeton-\u00e9t\u00e9".encode()}
        forged = client.post(
            "/v1/indexes/default/sync", json={"folders": [str(folder)]}, headers=not_ascii
        )
        assert forged.status_code == 401, forged.text
    assert not (served.data_dir / "uploads" / "default" / "a.md").exists()


def test_an_upload_is_kept_under_its_base_name_and_a_bad_name_saves_nothing(
    served: Served, keys: dict[str, str]
) -> None:
    path = served.base / "names" / "x.md"
    path.parent.mkdir()
    path.write_text("# X\n\nThe Corrow weir is 12 metres wide.\n")
    uploads = served.data_dir / "uploads" / "default"
    status, headers, _ = upload(
        served, path, "-F", f"files=@{path};filename=.hidden.md", key=keys["writer"]
    )
    assert status == 422
    assert not (uploads / "x.md").exists()
    status, headers, _ = upload(
        served, path, "-F", f"files=@{path};filename=../../y.md", key=keys["writer"]
    )
    assert status == 202
    with served.client(keys["writer"]) as client:
        assert wait_job(client, headers["location"])["state"] == "succeeded"
        assert (uploads / "y.md").read_text() == path.read_text()
        assert not (served.data_dir / "y.md").exists()
        assert not (served.base / "y.md").exists()
        assert not [p.name for p in uploads.iterdir() if p.name.startswith(".")]
        outside = client.delete(f"/v1/indexes/default/documents/{quote('../keys.json', safe='')}")
        assert outside.status_code == 404
    assert (served.data_dir / "keys.json").exists()


def test_writing_needs_a_key_with_write_rights_on_the_index(
    served: Served, keys: dict[str, str]
) -> None:
    folder = one_document(
        served.base / "scoped", "s.md", "# S\n\nThe Oxbury mill grinds 40 sacks a day.\n"
    )
    body = {"folders": [str(folder)]}
    with served.client(local=True) as anonymous:
        assert anonymous.post("/v1/indexes/default/sync", json=body).status_code == 401
    for name in ("reader", "elsewhere"):
        with served.client(keys[name], local=True) as client:
            assert client.post("/v1/indexes/default/sync", json=body).status_code == 403
            gone = client.delete("/v1/indexes/default/documents/s.md")
            assert gone.status_code == 403
    with served.client(keys["reader"]) as reader:
        assert reader.get("/v1/indexes/default/documents").status_code == 200
    status, _, _ = upload(served, folder / "s.md", "-H", f"Authorization: Bearer {keys['reader']}")
    assert status == 403
    with served.client(keys["writer"]) as writer:
        assert writer.post("/v1/indexes/default/sync", json=body).status_code == 403  # no roots
    with served.client(keys["writer"], local=True) as writer:
        response = writer.post("/v1/indexes/default/sync", json=body)
        assert response.status_code == 202, response.text
        assert wait_job(writer, response.headers["location"])["state"] == "succeeded"
        with served.client(keys["reader"]) as reader:
            assert reader.get(response.headers["location"]).status_code == 403


def test_rag_ingest_says_which_key_the_service_needs(served: Served, keys: dict[str, str]) -> None:
    folder = one_document(
        served.base / "keyed", "k.md", "# K\n\nThe Tarnside bell rings twice at noon.\n"
    )
    missing = rag_ingest(served, str(folder))
    assert missing.returncode == 2
    assert "RAG_API_KEY" in missing.stderr
    read_only = rag_ingest(served, str(folder), key=keys["reader"])
    assert read_only.returncode == 2
    assert "--write" in read_only.stderr
    written = rag_ingest(served, str(folder), "--json", key=keys["writer"])
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["added"] == 1
    record = read_record(served.data_dir)
    assert record is not None
    logs = [served.base / "api.log", *(served.data_dir / "logs").glob("*.log")]
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert keys["writer"] not in text
    assert record.token not in text


def test_rag_ingest_refuses_options_the_service_would_ignore(served: Served) -> None:
    folder = one_document(
        served.base / "optioned", "o.md", "# O\n\nThe Fenmoor gate shuts at dusk.\n"
    )
    refused = rag_ingest(served, str(folder), "--workers", "2")
    assert refused.returncode == 2
    assert "--workers cannot be used while the service" in refused.stderr
