"""The OpenAPI document is the contract: schemathesis, with all its checks, against the real
service over the real engine and a real index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from tests.service import RunningService, index_corpus

pytestmark = pytest.mark.engine

ANSWER_TOKENS = 4  # answers are kept short: the contract is about shapes, not about prose

# Every check runs. What the schema cannot know: a valid question may tokenise past the
# engine's window (413: its length in tokens depends on the text) and a well-formed index name
# may name no index (404) - both documented responses of /ask.
EXAMPLES = 25
# The ingestion routes: writing needs a key even on this keyless service (401), a generated
# folder lies outside the ingest roots (403) or is relative (422); a generated multipart upload
# is whatever files it holds, so no upload is "negative".
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "413"]

[[operations]]
include-path-regex = "^/v1/(indexes|jobs)/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "413", "422"]

[[operations]]
include-path = "/v1/indexes/{index}/documents"
include-method = "POST"
checks.negative_data_rejection.enabled = false
"""


@pytest.fixture(scope="module")
def contract_service(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[RunningService]:
    data = index_corpus(tmp_path_factory.mktemp("contract"), embedder)
    settings = Settings(data_dir=data, llm_url=engine_url, llm_timeout=60)
    with RunningService(create_app(settings)) as running:
        yield running


@pytest.fixture(scope="module")
def contract(contract_service: RunningService) -> Any:
    config = schemathesis.Config.from_str(CONFIG)
    return schemathesis.openapi.from_url(f"{contract_service.url}/openapi.json", config=config)


def _short_answers(case: schemathesis.Case) -> None:
    """Valid max_tokens values become small ones and valid timeout_s values generous ones (a
    valid deadline the CPU engine always meets); invalid ones stay invalid.

    JSON Schema counts 2.0 as an integer; the service refuses a count written as a float
    (issue 9: no silent coercion), so integral floats are sent as the integers they stand for.
    """
    body = case.body
    if not isinstance(body, dict):
        return
    for key in ("top_k", "max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, float) and value.is_integer():
            body[key] = int(value)
    for key in ("max_tokens", "max_completion_tokens"):  # /ask's, and /v1/chat/completions'
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            body[key] = min(value, ANSWER_TOKENS)
    value = body.get("timeout_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 300:
        body["timeout_s"] = max(value, 120)
    asks = isinstance(body.get("question"), str) or isinstance(body.get("messages"), list)
    if "max_tokens" not in body and asks:
        body["max_tokens"] = ANSWER_TOKENS


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_service_does_what_its_openapi_document_says(
    contract: Any, contract_service: RunningService, mode: GenerationMode
) -> None:
    # schemathesis's own pytest loader needs pytest < 9: each operation runs under hypothesis
    # here, every check of schemathesis on every response.
    failures: list[str] = []
    for result in contract.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to make invalid in a request without parameters or body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            _short_answers(case)
            case.call_and_validate(base_url=contract_service.url, timeout=180)

        try:
            conforms()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_the_document_bounds_max_tokens_by_the_engines_window(
    contract_service: RunningService,
) -> None:
    with contract_service.client() as client:
        client.post("/ask", json={"question": "What is the travel budget?", "max_tokens": 4})
        document = client.get("/openapi.json").json()
    field = document["components"]["schemas"]["AskRequest"]["properties"]["max_tokens"]
    assert {"type": "integer", "maximum": 4096, "minimum": 1} in field["anyOf"]
    ask = document["paths"]["/ask"]["post"]["responses"]
    assert "text/event-stream" in ask["200"]["content"]
    assert {"404", "413", "422", "503", "504"} <= set(ask)
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
