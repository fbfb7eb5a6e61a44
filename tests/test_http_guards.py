"""The service's HTTP edge, as a client on the network meets it: slow and idle connections,
too many connections, Host names, media types, methods, security headers, the API docs and
which routes answer without a key. The service is real; its engine is not needed (the URL
given answers nothing), since none of this reaches it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from api.app import create_app
from api.headers import default_allowed_hosts
from rag.config import Settings
from rag.guard import KeyStore
from tests.service import RunningService, free_port

NO_ENGINE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
ASK = {"question": "What is the travel budget?"}
# The routes anyone may call while the service has keys; every other one needs a key.
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/"),
    ("GET", "/playground/{name}"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
}
DOCS_ROUTES = {
    ("GET", "/docs"),
    ("GET", "/docs/start.js"),
    ("GET", "/docs/swagger-ui-bundle.js"),
    ("GET", "/docs/swagger-ui.css"),
}


def serve(tmp_path: Path, **settings: Any) -> RunningService:
    return RunningService(create_app(Settings(data_dir=tmp_path, llm_url=NO_ENGINE, **settings)))


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A service with a 1 s header deadline, at most 4 connections, and the API docs on."""
    data = tmp_path_factory.mktemp("edge")
    with serve(data, header_timeout_s=1.0, max_connections=4, api_docs=True) as running:
        yield running


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, str]]:
    """A keyed service and a key that reads and writes every index."""
    data = tmp_path_factory.mktemp("writer")
    key = KeyStore(data / "keys.json").create("writer", all_indexes=True, write=True)
    with serve(data) as running:
        yield running, key


def raw(running: RunningService) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    return connection


def read_all(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


# --- slow, idle and too many connections ---------------------------------------------------


def test_a_request_whose_headers_do_not_arrive_in_time_gets_408_and_is_closed(
    edge: RunningService,
) -> None:
    with raw(edge) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        t = time.monotonic()
        for _ in range(3):  # a byte now and then does not keep it open
            time.sleep(0.3)
            slow.sendall(b"a")
        answer = read_all(slow)
        took = time.monotonic() - t
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"RAG_HEADER_TIMEOUT_S" in answer
    assert took < 3


def test_a_connection_that_sends_nothing_is_closed(edge: RunningService) -> None:
    with raw(edge) as idle:
        t = time.monotonic()
        assert read_all(idle) == b""  # closed by the service, nothing said
        assert time.monotonic() - t < 3


def test_a_kept_alive_connection_serves_requests_whose_headers_come_in_time(
    edge: RunningService,
) -> None:
    with raw(edge) as kept:
        for pause in (0.0, 0.7, 0.7):  # the deadline runs per request, from its first byte
            time.sleep(pause)  # idle between requests: keep-alive's time, not the deadline's
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(0.5)
            kept.sendall(b"\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}') and b" 408 " not in answer:
                answer += kept.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_past_the_connection_cap_a_request_gets_503_with_retry_after(
    edge: RunningService,
) -> None:
    held = [raw(edge) for _ in range(4)]  # the cap: 4 open connections
    try:
        with httpx.Client(base_url=edge.url) as client:
            crowded = client.get("/healthz")
        assert crowded.status_code == 503
        assert crowded.json()["error"]["type"] == "overloaded"
        assert int(crowded.headers["retry-after"]) >= 1
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    with httpx.Client(base_url=edge.url) as client:
        assert client.get("/healthz").status_code == 200


def test_many_half_sent_requests_are_all_closed_within_the_deadline(
    edge: RunningService,
) -> None:
    half = []
    for _ in range(200):  # what the probe did with 1,500, scaled to a shared CI box
        connection = raw(edge)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        half.append(connection)
    time.sleep(2.5)  # the header deadline (1 s; as long for those past the cap)
    try:
        for connection in half:
            connection.settimeout(2)
            answer = read_all(connection)  # to the end: the service closed it
            assert answer.startswith(b"HTTP/1.1 408 "), answer
    except TimeoutError:
        pytest.fail("a half-sent request is still open past its deadline")
    finally:
        for connection in half:
            connection.close()


# --- Host names ------------------------------------------------------------------------------


def test_only_the_loopback_names_and_a_specific_bound_address_are_allowed_by_default() -> None:
    assert default_allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert default_allowed_hosts("0.0.0.0") == ["localhost", "127.0.0.1", "[::1]"]
    assert default_allowed_hosts("10.1.2.3")[-1] == "10.1.2.3"
    assert default_allowed_hosts("fd00::7")[-1] == "[fd00::7]"


def test_a_host_name_not_allowed_gets_400_dns_rebinding_included(edge: RunningService) -> None:
    with httpx.Client(base_url=edge.url) as client:
        for host in ("localhost", f"localhost:{edge.port}", "127.0.0.1", f"[::1]:{edge.port}"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example"):
            refused = client.post("/ask", json=ASK, headers={"Host": host})
            assert refused.status_code == 400, host
            assert refused.json()["error"]["type"] == "invalid_host"
            assert "RAG_ALLOWED_HOSTS" in refused.json()["error"]["message"]


def test_a_second_host_header_is_no_way_round_the_list(edge: RunningService) -> None:
    with raw(edge) as twice:
        twice.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: attacker.example\r\nHost: 127.0.0.1\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = read_all(twice)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_rag_allowed_hosts_replaces_the_list_and_star_allows_any(tmp_path: Path) -> None:
    listed = "rag.example.com, *.corp.example"
    with serve(tmp_path, allowed_hosts=listed) as running, running.client() as client:
        for host, status in [
            ("rag.example.com:8000", 200),
            ("team.corp.example", 200),
            ("corp.example", 400),
            ("localhost", 400),
        ]:
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host
    with serve(tmp_path, allowed_hosts="*") as running, running.client() as client:
        assert client.get("/healthz", headers={"Host": "anything.example"}).status_code == 200


# --- media types and methods -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
@pytest.mark.parametrize("path", ["/ask", "/v1/chat/completions", "/v1/indexes/default/sync"])
def test_json_routes_refuse_a_body_that_is_not_declared_json_with_415(
    writer: tuple[RunningService, str], path: str, content_type: str | None
) -> None:
    running, key = writer
    headers = {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    with httpx.Client(base_url=running.url) as client:
        refused = client.post(path, content=b'{"question": "hi"}', headers=headers)
    assert refused.status_code == 415, refused.text
    error = refused.json()["error"]
    assert error["type"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]


def test_a_caller_who_may_not_write_is_refused_before_the_media_type_is_read(
    edge: RunningService,
) -> None:
    with httpx.Client(base_url=edge.url) as client:
        refused = client.post("/v1/indexes/default/sync", content=b"{}")
    assert refused.status_code == 401, refused.text


def test_an_upload_that_is_not_multipart_gets_415(edge: RunningService) -> None:
    with httpx.Client(base_url=edge.url) as client:
        refused = client.post("/v1/indexes/default/documents", json={"files": ["a"]})
    assert refused.status_code == 415
    assert "multipart/form-data" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("PUT", "/v1/indexes/default/documents", "GET, HEAD, POST"),
        ("POST", "/v1/indexes/default/documents/a.md", "DELETE"),
        ("GET", "/ask", "POST"),
        ("POST", "/", "GET, HEAD"),
    ],
)
def test_a_405_names_every_method_of_its_path(
    edge: RunningService, method: str, path: str, allow: str
) -> None:
    with httpx.Client(base_url=edge.url) as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/", "/playground/app.js", "/healthz", "/openapi.json", "/docs"])
def test_head_is_answered_wherever_get_is(edge: RunningService, path: str) -> None:
    with httpx.Client(base_url=edge.url) as client:
        got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_integral_floats_are_counts_as_json_schema_says(edge: RunningService) -> None:
    """5.0 is a JSON Schema integer: it passes validation (here the engine is down: 503)."""
    with httpx.Client(base_url=edge.url) as client:
        body = {**ASK, "top_k": 5.0, "max_tokens": 8.0}
        assert client.post("/ask", json=body).status_code == 503
        for bad in ({"top_k": 2.5}, {"max_tokens": True}, {"top_k": "5"}):
            assert client.post("/ask", json={**ASK, **bad}).status_code == 422, bad
        chat = {"model": "rag:default", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post(
            "/v1/chat/completions", json={**chat, "max_tokens": 4.0}
        ).status_code in (
            404,  # this service has no index: the model is unknown, after validation
            503,
        )


# --- headers, pages and keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "host"),
    [
        ("GET", "/healthz", None),
        ("GET", "/", None),
        ("GET", "/nowhere", None),
        ("POST", "/ask", None),
        ("GET", "/healthz", "attacker.example"),
    ],
)
def test_every_response_carries_the_security_headers(
    edge: RunningService, method: str, path: str, host: str | None
) -> None:
    with httpx.Client(base_url=edge.url) as client:
        response = client.request(method, path, headers={"Host": host} if host else {})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy


def test_the_docs_page_is_served_from_this_origin_only(edge: RunningService) -> None:
    with httpx.Client(base_url=edge.url) as client:
        page = client.get("/docs")
        assets = [client.get(p) for p in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css")]
        redoc = client.get("/redoc")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http" not in page.text  # no script or style sheet from another origin
    assert "<script>" not in page.text  # no inline script
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert all(a.status_code == 200 and len(a.content) > 100_000 for a in assets)
    assert redoc.status_code == 404


def test_the_docs_are_off_by_default(tmp_path: Path) -> None:
    with serve(tmp_path) as running, running.client() as client:
        for path in ("/docs", "/redoc", "/docs/swagger-ui-bundle.js", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
        assert client.get("/openapi.json").status_code == 200


def _example_path(path: str) -> str:
    return (
        path.replace("{index}", "default")
        .replace("{source:path}", "a.md")
        .replace("{job_id}", "0" * 32)
        .replace("{name}", "app.js")
    )


def test_with_keys_only_the_documented_routes_answer_without_one(tmp_path: Path) -> None:
    KeyStore(tmp_path / "keys.json").create("someone", all_indexes=True)
    open_routes: set[tuple[str, str]] = set()
    with serve(tmp_path, api_docs=True) as running, running.client() as client:
        routes = iter_route_contexts(running.app.routes)
        pairs = [(m, r.path) for r in routes if r.path for m in sorted(r.methods or ())]
        for method, path in pairs:  # with a valid body: nothing but the key is missing
            body: dict[str, Any] = {"json": {}} if method == "POST" else {}
            if path.endswith("/documents") and method == "POST":
                body = {"files": {"files": ("a.md", b"# A\n")}}
            response = client.request(method, _example_path(path), **body)
            if response.status_code != 401:
                open_routes.add((method, path))
    assert open_routes == OPEN_ROUTES | DOCS_ROUTES
