"""Keys are checked before any byte of a body is read: a caller without a key (or without the
right to write) gets its 401/403 at once, whatever it is sending, and the service neither reads
nor spools the body. A real service (no engine: none is needed to refuse), raw sockets.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.app import create_app
from rag.config import Settings
from rag.guard import KeyStore, keys_path
from tests.service import RunningService, free_port

UPLOAD = "/v1/indexes/default/documents"
BOUNDARY = "rag-test-boundary"
UPLOAD_BYTES = 90_000_000  # under RAG_MAX_FILE_MB's 100 MB: only the key can refuse it
# What the kernel's socket buffers (both ends, loopback) and uvicorn's read-ahead hold at most.
BUFFERED = 16_000_000


class BodyBytes:
    """Outermost ASGI layer counting the body bytes the service took from the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


class Served:
    def __init__(self, running: RunningService, counter: BodyBytes, spool: Path) -> None:
        self.running, self.counter, self.spool = running, counter, spool
        self.keys = KeyStore(keys_path(running.app.state.settings))


def serve(base: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[Served]:
    config = Settings(
        data_dir=base / "data",
        llm_url=f"http://127.0.0.1:{free_port()}",  # no engine: refusals need none
        llm_timeout=5,
        **settings,  # type: ignore[arg-type]
    )
    running = RunningService(create_app(config))
    counter = BodyBytes(running.app)
    running.server.config.app = counter  # uvicorn serves the app through the counter
    with running:
        spool = base / "spool"  # where an upload's parts would be spooled to disk
        spool.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(spool))  # after start-up's own files
        yield Served(running, counter, spool)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serve(tmp_path, monkeypatch)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def _read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the answer"
        body += chunk
    return Answer(int(lines[0].split()[1]), headers, body)


class Sent:
    """A request whose body is streamed from a thread while the answer is read: what came
    back, after how long, how many body bytes the connection took meanwhile, and whether the
    service closed the connection after answering."""

    def __init__(self, answer: Answer, seconds: float, body_sent: int, closed: bool) -> None:
        self.answer, self.seconds, self.body_sent, self.closed = answer, seconds, body_sent, closed


def send(
    served: Served, path: str, content_type: str, body_bytes: int, headers: dict[str, str]
) -> Sent:
    sock = socket.create_connection(("127.0.0.1", served.running.port), timeout=60)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {body_bytes}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sent = 0
    preamble = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    filler = b"x" * (1 << 20)

    def pump() -> None:
        nonlocal sent
        try:
            sock.sendall(preamble)
            sent = len(preamble)
            while sent < body_bytes:
                sent += sock.send(filler[: min(len(filler), body_bytes - sent)])
        except OSError:
            pass  # the service answered and closed

    started = time.monotonic()
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    try:
        answer = _read_answer(sock)
        seconds = time.monotonic() - started
        sock.settimeout(10)
        try:
            closed = sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            closed = True
    finally:
        sock.close()
        pumping.join(timeout=30)
    return Sent(answer, seconds, sent, closed)


def upload(served: Served, headers: dict[str, str]) -> Sent:
    return send(served, UPLOAD, f"multipart/form-data; boundary={BOUNDARY}", UPLOAD_BYTES, headers)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused_unread(served: Served, sent: Sent, status: int, kind: str) -> None:
    assert sent.answer.status == status, sent.answer.body
    assert f'"type":"{kind}"' in sent.answer.body.decode()
    assert sent.seconds < 10
    assert sent.answer.headers.get("connection") == "close"
    assert sent.closed
    assert served.counter.read == 0  # not one byte of the body was taken
    assert sent.body_sent < BUFFERED  # the sender was stopped, not drained
    assert list(served.spool.iterdir()) == []  # nothing spooled to disk
    assert not (served.running.app.state.settings.data_dir / "uploads").exists()


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(served: Served) -> None:
    served.keys.create("writer", ["default"], write=True)
    sent = upload(served, {})
    assert_refused_unread(served, sent, 401, "unauthenticated")
    assert sent.answer.headers["www-authenticate"] == "Bearer"
    wrong = upload(served, bearer("rag_0123456789ab_" + "x" * 43))
    assert_refused_unread(served, wrong, 401, "unauthenticated")


def test_an_upload_with_a_key_that_may_not_write_is_refused_before_its_body_is_read(
    served: Served,
) -> None:
    reader = served.keys.create("reader", ["default"])
    elsewhere = served.keys.create("elsewhere", ["other"], write=True)
    assert_refused_unread(served, upload(served, bearer(reader)), 403, "permission_denied")
    assert_refused_unread(served, upload(served, bearer(elsewhere)), 403, "permission_denied")


def test_an_anonymous_upload_to_a_keyless_service_is_refused_before_its_body_is_read(
    served: Served,
) -> None:
    assert not served.keys.closed()  # no key: asking is open, writing still needs one
    sent = upload(served, {"X-Rag-Local-Token": "not-the-token"})
    assert_refused_unread(served, sent, 401, "unauthenticated")
    assert b"rag-keys create NAME --index default --write" in sent.answer.body


def test_a_question_without_a_key_is_refused_before_its_body_is_read(served: Served) -> None:
    served.keys.create("reader", ["default"])
    sent = send(served, "/ask", "application/json", 60_000, {})
    assert_refused_unread(served, sent, 401, "unauthenticated")


def test_a_key_over_its_rate_is_refused_before_its_body_is_read(served: Served) -> None:
    writer = served.keys.create("writer", ["default"], write=True, rps=0.01)
    with httpx.Client(base_url=served.running.url, headers=bearer(writer)) as client:
        assert client.get("/v1/indexes/default/documents").status_code in (200, 404)
    sent = upload(served, bearer(writer))
    assert_refused_unread(served, sent, 429, "rate_limited")
    assert int(sent.answer.headers["retry-after"]) >= 1


def test_a_key_that_may_write_uploads_as_before(served: Served) -> None:
    writer = served.keys.create("writer", ["default"], write=True)
    with httpx.Client(base_url=served.running.url, headers=bearer(writer), timeout=60) as client:
        sent = client.post(UPLOAD, files={"files": ("notes.txt", b"The levy is 7 florins.")})
        assert sent.status_code == 202, sent.text
        refused = client.post(
            UPLOAD, files={"files": ("notes.txt", b"x")}, headers=bearer(writer[:-1] + "x")
        )
    assert refused.status_code == 401
    assert served.counter.read > 0
    kept = served.running.app.state.settings.data_dir / "uploads" / "default" / "notes.txt"
    assert kept.read_bytes() == b"The levy is 7 florins."
