"""What /ask accepts and refuses at the HTTP level, over the real engine and index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.asking import readme_curl_asks, run_curl_line
from tests.service import RunningService

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "blank"),
        ({"question": "x" * 4001}, 422, "question"),
        ({"question": "hi", "top_k": 0}, 422, "top_k"),
        ({"question": "hi", "top_k": 101}, 422, "top_k"),
        ({"question": "hi", "top_k": "many"}, 422, "top_k"),
        ({"question": "hi", "index": "nope"}, 404, "does not exist"),
        ({"question": "hi", "index": "../x"}, 422, "invalid index name"),
        ({"question": "hi", "colour": "blue"}, 422, "colour"),
        ({"question": "hi", "max_tokens": 8190}, 422, "max_tokens: at most 4096"),
        ({"question": "\u0000\u0000\u0001"}, 422, "blank"),
        ({"question": "hi", "index": "docs\n"}, 422, "index"),
        ({"question": "hi", "index": ""}, 422, "index"),
        ({"question": "hi", "stream": "yes"}, 422, "stream"),
        ({"question": "hi", "temperature": False}, 422, "temperature"),
        ({"question": "hi", "top_k": "5"}, 422, "top_k"),
        ({"question": "hi", "top_k": True}, 422, "top_k"),
        ({"question": "hi", "top_k": 2.5}, 422, "top_k"),
        ({"question": "hi", "filters": {"modified_after": 1700000000}}, 422, "ISO 8601"),
        ({"question": "hi", "filters": {"modified_after": "0001-01-01T00:00:00"}}, 422, "range"),
        ({"question": "hi", "filters": {"modified_before": "2024-13-01"}}, 422, "datetime"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(
    service: RunningService, payload: dict[str, Any], status: int, fragment: str
) -> None:
    with service.client() as client:
        response = client.post("/ask", json=payload)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_the_readme_curl_examples_answer_200_as_printed(service: RunningService) -> None:
    lines = readme_curl_asks()
    assert len(lines) >= 2
    for line in lines:  # while no key exists, any key (or none) is accepted
        body, status = run_curl_line(line, service.port, "rag_0123456789ab_any-key-is-fine")
        assert status == "200", body[-500:]
        assert "citations" in body


def test_a_body_over_the_limit_gets_a_413_before_it_is_read(service: RunningService) -> None:
    big = json.dumps({"question": "hi", "index": "x" * 2_000_000}).encode()  # past 1 MiB

    def chunks() -> Iterator[bytes]:
        for k in range(0, len(big), 4096):
            yield big[k : k + 4096]

    with service.client() as client:
        declared = client.post("/ask", content=big, headers={"content-type": "application/json"})
        chunked = client.post(  # no Content-Length: counted as read
            "/ask", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "body_too_large"


def test_health_routes_answer_head(service: RunningService) -> None:
    with service.client() as client:
        assert client.head("/healthz").status_code == 200
        assert client.head("/readyz").status_code == 200


def test_malformed_json_gets_a_422(service: RunningService) -> None:
    with service.client() as client:
        response = client.post(
            "/ask", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"
