"""The key file fails closed: revoking the last key leaves the service closed, and a key file
that cannot be read refuses every keyed request with 503 `keys_unavailable` (never a 500, never
an open service), reports not ready, and gives `rag-keys` a clear error. A real service (no
engine: none is needed to refuse), the real `rag-keys`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ingest.keys_cli import main as keys_main
from tests.test_key_gate import Served, bearer, serve, upload

QUESTION = {"question": "What is the travel budget?", "max_tokens": 4}
DOCUMENTS = "/v1/indexes/default/documents"
CORRUPT = {
    "truncated": '{"version": 1, "keys": [{"name": "ui", "id": "3f9c',
    "not an object": '["ui"]',
    "no key list": '{"version": 1}',
    "a record without its hash": '{"version": 1, "keys": [{"name": "ui", "id": "3f9c0a1b2c4d"}]}',
    "a salt that is not hex": json.dumps(
        {
            "version": 1,
            "keys": [{"name": "ui", "id": "3f9c0a1b2c4d", "salt": "zz", "hash": "00"}],
        }
    ),
    "a rate that is not a number": json.dumps(
        {
            "version": 1,
            "keys": [
                {"name": "ui", "id": "3f9c0a1b2c4d", "salt": "00", "hash": "00", "rps": "fast"}
            ],
        }
    ),
    "not UTF-8": b"\xff\xfe{".decode("latin-1"),
}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serve(tmp_path, monkeypatch)


def rag_keys(served: Served, *args: str) -> tuple[int, str]:
    env = {"RAG_KEYS_FILE": str(served.keys.path), "RAG_DATA_DIR": str(served.keys.path.parent)}
    done = CliRunner().invoke(keys_main, list(args), env=env)
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.output


def client(served: Served, key: str | None = None) -> httpx.Client:
    headers = bearer(key) if key else {}
    return httpx.Client(base_url=served.running.url, headers=headers, timeout=60)


def test_revoking_the_last_key_leaves_the_service_closed(served: Served) -> None:
    with client(served) as anonymous:
        assert anonymous.get(DOCUMENTS).status_code != 401  # no key yet: reading is open
        assert rag_keys(served, "create", "ui", "--index", "default")[0] == 0
        code, said = rag_keys(served, "revoke", "ui")
        assert code == 0
        assert "the service stays closed" in said
        assert "set RAG_AUTH=off to open it" in said
        asked = anonymous.post("/ask", json=QUESTION)
        assert asked.status_code == 401, asked.text
        assert asked.json()["error"]["type"] == "unauthenticated"
        assert anonymous.get(DOCUMENTS).status_code == 401
        assert anonymous.get("/readyz").status_code == 401
        served.keys.path.unlink()  # the deliberate way back to a keyless service
        assert anonymous.get(DOCUMENTS).status_code != 401


def test_revoking_one_of_two_keys_says_nothing_of_closing(served: Served) -> None:
    served.keys.create("ui", ["default"])
    served.keys.create("ops", all_indexes=True, admin=True)
    code, said = rag_keys(served, "revoke", "ui")
    assert code == 0
    assert "stays closed" not in said


def test_with_auth_off_a_service_whose_keys_were_revoked_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for served in serve(tmp_path, monkeypatch, auth="off"):
        served.keys.create("ui", ["default"])
        served.keys.revoke("ui")
        with client(served) as anonymous:
            assert anonymous.get(DOCUMENTS).status_code != 401


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_corrupt_key_file_refuses_keyed_routes_with_503_and_is_not_ready(
    served: Served, kind: str
) -> None:
    key = served.keys.create("ui", ["default"], write=True)
    served.keys.path.write_text(CORRUPT[kind], encoding="latin-1")
    for caller in (key, None):
        with client(served, caller) as c:
            for response in (c.post("/ask", json=QUESTION), c.get(DOCUMENTS)):
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["type"] == "keys_unavailable"
                assert str(served.keys.path) in error["message"]
                assert "cannot be used" in error["message"]
                assert int(response.headers["retry-after"]) > 0
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert ready.json()["checks"]["keys"].startswith("unavailable: the key file")
            assert c.get("/healthz").status_code == 200  # alive, not ready
    refused = upload(served, bearer(key))  # refused before its body is read, too
    assert refused.answer.status == 503
    assert served.counter.read == 0
    for args in (["list"], ["create", "other", "--index", "default"], ["revoke", "ui"]):
        code, said = rag_keys(served, *args)
        assert code == 2, said
        assert said.startswith("Error: the key file ")
        assert "Traceback" not in said
    served.keys.path.unlink()
    served.keys.create("ui", ["default"])  # repaired: keyed again, and ready but for the engine
    with client(served) as anonymous:
        assert anonymous.post("/ask", json=QUESTION).status_code == 401


def test_a_key_file_that_cannot_be_read_is_unavailable_too(served: Served) -> None:
    served.keys.create("ui", ["default"])
    served.keys.path.unlink()
    served.keys.path.mkdir()  # a folder in its place: reading it fails with EISDIR
    with client(served) as anonymous:
        response = anonymous.post("/ask", json=QUESTION)
    assert response.status_code == 503
    assert "cannot be read" in response.json()["error"]["message"]
    code, said = rag_keys(served, "list")
    assert code == 2
    assert "Traceback" not in said
