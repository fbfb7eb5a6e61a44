"""The write scope of API keys: who may sync, upload and delete (issue 12), in the key file,
`rag-keys` and over HTTP (the service's own routes are tested in test_ingest_jobs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.keys_cli import main as keys_main
from rag.guard import KeyStore, KeyStoreError
from tests.test_keys import app_with, bearer


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "data" / "keys.json")


def test_a_write_key_writes_only_the_indexes_it_reads_and_admin_writes_all(
    keys: KeyStore,
) -> None:
    writer = keys.verify(keys.create("sync", ["handbook"], write=True))
    reader = keys.verify(keys.create("ui", ["handbook"]))
    admin = keys.verify(keys.create("ops", admin=True))
    assert writer is not None
    assert reader is not None
    assert admin is not None
    assert writer.can_write("handbook")
    assert not writer.can_write("payroll")
    assert not reader.can_write("handbook")
    assert admin.can_write("payroll")
    with pytest.raises(KeyStoreError, match="write applies"):
        keys.create("lonely", admin=True, write=True)


def test_a_key_file_from_before_the_write_scope_still_reads_and_does_not_write(
    keys: KeyStore,
) -> None:
    key = keys.create("old", ["handbook"])
    data = json.loads(keys.path.read_text())
    for record in data["keys"]:
        del record["write"]
    keys.path.write_text(json.dumps(data))
    principal = keys.verify(key)
    assert principal is not None
    assert principal.can_read("handbook")
    assert not principal.can_write("handbook")


def test_rag_keys_create_write_shows_the_scope(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    made = runner.invoke(keys_main, ["create", "sync", "--index", "docs", "--write"], env=env)
    assert made.exit_code == 0, made.output
    principal = KeyStore(tmp_path / "data" / "keys.json").verify(made.stdout.strip())
    assert principal is not None
    assert principal.can_write("docs")
    assert json.loads(runner.invoke(keys_main, ["list", "--json"], env=env).stdout)["write"]
    assert "write" in runner.invoke(keys_main, ["list"], env=env).stdout


def test_a_key_without_write_rights_gets_403_on_a_writing_route(keys: KeyStore) -> None:
    reader, writer = keys.create("ui", ["docs"]), keys.create("sync", ["docs"], write=True)
    client = app_with(keys)
    refused = client.post("/sync", json={"index": "docs"}, headers=bearer(reader))
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_denied"
    assert "may not write" in refused.json()["error"]["message"]
    allowed = client.post("/sync", json={"index": "docs"}, headers=bearer(writer))
    assert allowed.json() == {"caller": "sync"}
    assert client.post("/sync", json={"index": "docs"}).status_code == 401


def test_writing_without_a_key_is_refused_even_where_keys_are_optional(keys: KeyStore) -> None:
    for mode in ("auto", "off"):
        refused = app_with(keys, mode).post("/sync", json={"index": "docs"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "unauthenticated"
        assert "rag-keys create NAME --index docs --write" in refused.json()["error"]["message"]
        assert app_with(keys, mode).post("/ask", json={"index": "docs"}).status_code == 200
