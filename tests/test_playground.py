"""The playground at `/` in a real headless Chromium (Debian's `chromium`, driven by Playwright),
over the real service and the real vLLM engine.

Set ``PLAYGROUND_SCREENSHOT=docs/playground.png`` to also write the page after an answer there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from rag.guard import KeyStore, keys_path
from tests.service import RunningService, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

INSTALL = "install Debian's chromium (sudo apt-get install chromium) to run the playground tests"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI") == "true"  # there it must run: .ci/run installs chromium

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason=f"no chromium on PATH: {INSTALL}"),
]

MARK = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")  # [1], [1, 2]
# SmolLM2-135M rarely cites on its own; asked to, it starts with "[1]" and quotes the passage.
QUESTION = "What does the zeppelin fleet expansion depend on? Start your answer with [1]."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        pytest.fail(f"no chromium on PATH in CI: {INSTALL}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 1100})
    opened = context.new_page()
    opened.set_default_timeout(120_000)  # an answer from the CPU engine, shared by others
    yield opened
    context.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, str]]:
    """A service that requires keys, with one key, and no engine listening where it looks."""
    from api.app import create_app
    from rag.config import Settings

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("keyed"),
        auth="required",
        llm_url=f"http://127.0.0.1:{free_port()}",
        llm_timeout=5,
    )
    key = KeyStore(keys_path(settings)).create("playground", all_indexes=True)
    with RunningService(create_app(settings)) as running:
        yield running, key


def stream_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def ask(page: Page, question: str, **fields: str) -> None:
    page.get_by_label("Question", exact=True).fill(question)
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Ask").click()


def test_the_page_is_served_without_a_key_and_loads_nothing_from_elsewhere(
    keyed: tuple[RunningService, str], page: Page
) -> None:
    service, _ = keyed
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    response = page.goto(service.url)
    assert response is not None
    assert response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page.get_by_label("API key").wait_for()
    page.wait_for_load_state("networkidle")
    assert {url.split("/")[2] for url in asked} == {service.url.split("/")[2]}
    assert any(url.endswith("/playground/app.js") for url in asked)
    assert httpx.get(f"{service.url}/playground/secrets.txt").status_code == 404


def test_an_answer_streams_in_with_numbered_cards_its_marks_link_to(
    service: RunningService, page: Page, tmp_path: Path
) -> None:
    page.goto(service.url)
    index = page.get_by_label("Index", exact=True)
    index.locator("option[value=docs]").wait_for(state="attached")  # listed by GET /v1/models
    index.select_option("docs")
    page.get_by_text("Filters").click()
    page.get_by_label("PDF", exact=True).check()
    with page.expect_response(f"{service.url}/ask") as sent:
        ask(page, QUESTION, **{"Path prefix": "reports", "Longest answer (tokens)": "60"})
    page.wait_for_selector("#answer-section[data-state=done]")
    assert json.loads(sent.value.request.post_data or "")["filters"] == {
        "path_prefix": "reports",
        "file_types": ["pdf"],
    }
    from playwright.sync_api import Error as PlaywrightError

    shown = page.locator("#answer").text_content() or ""
    try:
        events = stream_events(sent.value.text())
    except PlaywrightError:  # Chromium sometimes drops a streamed body: ask again, same body
        body = json.loads(sent.value.request.post_data or "") | {"stream": False}
        replay = httpx.post(f"{service.url}/ask", json=body, timeout=300).json()
        events = [("citations", {"citations": replay["citations"]})]
        events.append(("token", {"text": shown}))  # the answer itself was checked on the page
    citations = events[0][1]["citations"]
    answer = "".join(data["text"] for name, data in events if name == "token")

    assert page.locator("#error").is_hidden()
    assert answer.strip()
    assert shown == answer
    cards = page.locator("#citations > li")
    assert cards.count() == len(citations)
    for card, citation in zip(cards.all(), citations, strict=True):
        assert card.get_attribute("id") == f"cite-{citation['n']}"
        assert citation["source"] in (card.locator("h3").text_content() or "")
        assert card.locator(".passage").text_content() == citation["text"]
    marked = [int(n) for mark in MARK.findall(answer) for n in mark.split(",")]
    numbers = [n for n in marked if 1 <= n <= len(citations)]
    assert numbers, f"the engine wrote no [n] mark this time: {answer!r}"
    links = page.locator("#answer a.mark")
    assert links.count() == len(numbers)
    first = links.first
    assert first.get_attribute("href") == f"#cite-{numbers[0]}"
    first.click()
    target = page.locator(f"#cite-{numbers[0]}")
    assert "active" in (target.get_attribute("class") or "")
    assert page.evaluate("location.hash") == f"#cite-{numbers[0]}"
    assert target.locator(".cited").count() == 1
    highlighted = page.locator(".card mark")
    assert highlighted.count() > 0
    for mark in highlighted.all():  # a sentence of the card's own passage
        passage = mark.locator("xpath=ancestor::li[1]").locator(".passage").text_content()
        assert (mark.text_content() or "").strip() in (passage or "")

    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    assert 0 < shot.stat().st_size < 500_000
    wanted = os.environ.get("PLAYGROUND_SCREENSHOT")
    if wanted:
        shutil.copy(shot, wanted)


def test_a_follow_up_sends_the_conversation_and_cards_are_numbered_across_turns(
    service: RunningService, page: Page
) -> None:
    page.goto(service.url)
    index = page.get_by_label("Index", exact=True)
    index.locator("option[value=docs]").wait_for(state="attached")
    index.select_option("docs")
    fields = {"Longest answer (tokens)": "24", "Passages (top_k)": "3"}
    with page.expect_response(f"{service.url}/ask") as sent:
        ask(page, "What does the zeppelin fleet expansion depend on?", **fields)
    page.wait_for_selector("#answer-section[data-state=done]")
    assert "history" not in json.loads(sent.value.request.post_data or "")
    first_answer = page.locator("#answer").text_content() or ""
    first_cards = page.locator("#citations > li").evaluate_all("cards => cards.map(c => c.id)")
    assert first_cards == [f"cite-{n}" for n in range(1, len(first_cards) + 1)]

    with page.expect_response(f"{service.url}/ask") as sent:
        ask(page, "And when will it be finished?", **fields)
    page.wait_for_selector("#answer-section[data-state=done]")
    body = json.loads(sent.value.request.post_data or "")
    user, assistant = body["history"]  # the answer as streamed; the page shows [1, 2] as [1][2]
    assert user == {"role": "user", "content": "What does the zeppelin fleet expansion depend on?"}
    assert assistant["role"] == "assistant"
    assert MARK.sub("", assistant["content"]).strip() == MARK.sub("", first_answer).strip()
    asked = page.locator("#conversation .asked")
    assert asked.all_text_contents() == ["What does the zeppelin fleet expansion depend on?"]
    ids = page.locator("#citations > li").evaluate_all("cards => cards.map(c => c.id)")
    numbers = [int(i.removeprefix("cite-")) for i in ids]
    assert numbers == sorted(set(numbers))  # one card per number, in order
    assert ids[: len(first_cards)] == first_cards  # turn 1's cards stay; turn 2's come after

    page.get_by_role("button", name="New chat").click()
    assert page.locator("#citations > li").count() == 0
    assert page.locator("#conversation-section").is_hidden()
    with page.expect_response(f"{service.url}/ask") as sent:
        ask(page, "How should receipts be submitted?", **fields)
    page.wait_for_selector("#answer-section[data-state=done]")
    assert "history" not in json.loads(sent.value.request.post_data or "")


def test_stop_ends_an_answer_while_it_streams(service: RunningService, page: Page) -> None:
    page.goto(service.url)
    ask(page, "Describe the handbook in detail.", **{"Longest answer (tokens)": "400"})
    page.wait_for_selector("#answer-section[data-state=streaming]")  # the citations are in
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("#answer-section[data-state=stopped]")
    assert page.get_by_role("status").text_content() == "Stopped."
    assert page.get_by_role("alert").is_hidden()
    assert page.get_by_role("button", name="Ask").is_enabled()


def test_a_rejected_question_shows_the_servers_message(service: RunningService, page: Page) -> None:
    page.goto(service.url)
    ask(page, "   ")  # not blank to the browser, blank to the service
    error = page.get_by_role("alert")
    error.wait_for()
    assert (
        error.text_content()
        == "422 invalid_request: question: Value error, question must not be blank"
    )


def test_a_wrong_key_shows_401_and_the_stored_key_reaches_the_service(
    keyed: tuple[RunningService, str], page: Page
) -> None:
    service, key = keyed
    page.goto(service.url)
    page.get_by_label("API key").fill("not-a-key")
    ask(page, "Where is the coffee machine?")
    error = page.get_by_role("alert")
    error.wait_for()
    assert "401 unauthenticated: the API key is not valid" in (error.text_content() or "")

    page.get_by_label("API key").fill(key)
    page.reload()  # the key comes back from local storage
    assert page.get_by_label("API key").input_value() == key
    ask(page, "Where is the coffee machine?")
    page.wait_for_selector("#error:has-text('503 engine_unavailable')")
    assert "Try again in" in (error.text_content() or "")


def test_the_api_docs_render_from_this_origin_within_their_policy(
    page: Page, tmp_path: Path
) -> None:
    """RAG_API_DOCS=on: Swagger UI draws every operation from /openapi.json, with nothing
    fetched from elsewhere and nothing its Content-Security-Policy refuses."""
    from api.app import create_app
    from rag.config import Settings

    settings = Settings(data_dir=tmp_path, api_docs=True, llm_url=f"http://127.0.0.1:{free_port()}")
    asked: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    with RunningService(create_app(settings)) as running:
        response = page.goto(f"{running.url}/docs")
        assert response is not None
        assert response.status == 200
        page.locator(".opblock-summary-path", has_text="/v1/chat/completions").wait_for()
        page.wait_for_load_state("networkidle")
    assert {url.split("/")[2] for url in asked} == {running.url.split("/")[2]}
    assert any(url.endswith("/openapi.json") for url in asked)
    assert not [line for line in console if "Content Security Policy" in line], console


def test_a_service_that_went_away_is_reported_as_unreachable(page: Page) -> None:
    from fastapi import FastAPI

    from api.playground import router

    app = FastAPI()
    app.include_router(router)
    with RunningService(app) as gone:
        page.goto(gone.url)
        page.get_by_label("Index", exact=True).wait_for()
    ask(page, "Where is the coffee machine?")
    error = page.get_by_role("alert")
    error.wait_for()
    assert f"Could not reach the service at {gone.url}: " in (error.text_content() or "")
