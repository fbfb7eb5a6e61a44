"""The OpenAPI document is the contract: schemathesis, every phase and every check, run with a
key that may read and write every index, against the real service over the real engine and a
real index; and the document states the engine's own bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from rag.guard import KeyStore
from tests.service import RunningService, index_corpus

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
ANSWER_TOKENS = 4  # an ask that sets no max_tokens; tests/contract_hooks.py caps those that do
# Cases per operation and phase: about 800 requests, 1-2 minutes with the CPU engine.
EXAMPLES = 25
# What the schema cannot know: a valid question may tokenise past the engine's window (413:
# its length in tokens depends on the text) and a well-formed index name may name no index
# (404) - both documented responses of /ask. The ingestion routes: a generated folder lies
# outside the ingest roots (403) or does not exist (422), an index, document or job named at
# random does not exist (404); a generated multipart upload is whatever files it holds, so no
# upload is "negative", and a generated file name need not name a document type (415).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "413"]

[[operations]]
include-path = "/v1/indexes/{index}/documents"
include-method = "POST"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404", "413", "415", "422"]

[[operations]]
include-path-regex = "^/v1/(indexes|jobs)/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404", "413", "422"]
"""


@pytest.fixture(scope="module")
def contract_service(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[tuple[RunningService, str]]:
    """The service with keys (so a key is required), a key that reads and writes every index
    (not an admin's: syncs stay in the ingest roots), no rate limits to trip over."""
    base = tmp_path_factory.mktemp("contract")
    data = index_corpus(base, embedder)
    roots = base / "roots"
    (roots / "team").mkdir(parents=True)
    (roots / "team" / "note.md").write_text("# Note\n\nThe Ferncliff quay opens at dawn.\n")
    key = KeyStore(data / "keys.json").create("contract", all_indexes=True, write=True)
    settings = Settings(
        data_dir=data,
        llm_url=engine_url,
        llm_timeout=60,
        ingest_roots=[roots],
        max_output_tokens=ANSWER_TOKENS,
        rate_limit_rps=0,
        rate_limit_tokens_per_minute=0,
    )
    with RunningService(create_app(settings)) as running:
        yield running, key


def test_the_service_does_what_its_openapi_document_says(
    contract_service: tuple[RunningService, str], tmp_path: Path
) -> None:
    """schemathesis's own run (its pytest loader needs pytest < 9): examples, coverage (every
    boundary, undeclared methods, missing headers), fuzzing and stateful phases, positive and
    negative data, all its checks on every response."""
    running, key = contract_service
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{running.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--max-response-time",
        "120",
        "--request-timeout",
        "180",
        "--workers",
        "1",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.contract_hooks",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-20000:]
    assert " passed" in report, report[-5000:]


def test_the_document_bounds_max_tokens_by_the_engines_window(
    contract_service: tuple[RunningService, str],
) -> None:
    running, key = contract_service
    with running.client() as client:
        client.headers["Authorization"] = f"Bearer {key}"
        client.post("/ask", json={"question": "What is the travel budget?", "max_tokens": 4})
        document = client.get("/openapi.json").json()
    field = document["components"]["schemas"]["AskRequest"]["properties"]["max_tokens"]
    assert {"type": "integer", "maximum": 4096, "minimum": 1} in field["anyOf"]
    ask = document["paths"]["/ask"]["post"]["responses"]
    assert "text/event-stream" in ask["200"]["content"]
    assert {"404", "413", "422", "503", "504"} <= set(ask)
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    for route in ("/v1/indexes/{index}/sync", "/v1/indexes/{index}/documents"):
        assert {"413", "415"} <= set(document["paths"][route]["post"]["responses"])
    upload = document["paths"]["/v1/indexes/{index}/documents"]["post"]["requestBody"]
    form = upload["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert document["components"]["schemas"][form]["properties"]["files"]["minItems"] == 1
