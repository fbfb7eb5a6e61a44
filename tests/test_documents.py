"""Reading bytes into text: byte order marks, visible HTML text, Markdown headings; linear time."""

from __future__ import annotations

import codecs
import contextlib
import time

import pytest

from rag.errors import DocumentError
from rag.ingest.readers import parse_document
from rag.ingest.readers.text import decode_text
from tests.documents import HTML, MARKDOWN

TEXT = "Crème brûlée – naïve café ☕ 東京\nsecond line"


@pytest.mark.parametrize(
    ("mark", "encoding"),
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
    ],
)
def test_text_with_a_byte_order_mark_is_read_in_the_encoding_it_names(
    mark: bytes, encoding: str
) -> None:
    data = mark + TEXT.encode(encoding)
    assert decode_text(data) == TEXT
    assert parse_document(data, "text")[0].text == TEXT


def test_unmarked_utf8_and_western_texts_decode_as_before() -> None:
    assert decode_text(TEXT.encode("utf-8")) == TEXT
    assert decode_text("Crème brûlée for the café".encode("cp1252")) == "Crème brûlée for the café"


def test_nul_bytes_without_a_byte_order_mark_are_a_binary_file() -> None:
    with pytest.raises(DocumentError, match="binary file"):
        decode_text(TEXT.encode("utf-16-le"))


def test_html_text_is_what_a_reader_sees_with_whitespace_normalised() -> None:
    text = parse_document(HTML.encode(), "html")[0].text
    assert "Service status" in text
    assert "The ingestion service processed every queued folder overnight." in text
    for hidden in ("script text", "color:red", "enable javascript", "Status\n"):
        assert hidden not in text
    assert "  " not in text
    assert "\n\n\n" not in text
    assert text == text.strip()


def test_html_inline_elements_join_and_block_elements_break_lines() -> None:
    html = (
        "<html><head><meta charset=utf-8><title>Hidden</title><body>"
        "<p>Hello <b>bold</b> world &amp; more</p><ul><li>one</li><li>two</li></ul>"
        "<svg><text>drawing</text></svg><template>later</template><!-- note --><p>end</p>"
    )
    lines = parse_document(html.encode(), "html")[0].text.splitlines()
    assert [line for line in lines if line] == ["Hello bold world & more", "one", "two", "end"]


def _timed_html(data: bytes) -> float:
    start = time.perf_counter()
    with contextlib.suppress(DocumentError):  # markup without text: it must end, that is all
        parse_document(data, "html")
    return time.perf_counter() - start


def test_deeply_nested_html_parses_about_as_fast_as_flat_html_of_its_size() -> None:
    depth = 200_000
    nested = ("<html><body>" + "<div>x " * depth + "</div>" * depth + "</body></html>").encode()
    unit = "<div>x </div>"
    flat = ("<html><body>" + unit * (len(nested) // len(unit)) + "</body></html>").encode()
    nested_s, flat_s = _timed_html(nested), _timed_html(flat)
    assert nested_s < 10
    assert nested_s < 4 * max(flat_s, 0.25)
    assert parse_document(nested, "html")[0].text.split() == ["x"] * depth


@pytest.mark.parametrize("unit", ["</", "<!", '<a x="', "<script>", "<", "<!--"])
def test_unterminated_markup_does_not_stall_html_extraction(unit: str) -> None:
    assert _timed_html((unit * (2_000_000 // len(unit))).encode()) < 10


@pytest.mark.parametrize(
    ("line", "title"),
    [
        ("# " + "# " * 100_000 + "x", "# " * 100_000 + "x"),
        ("# " + "a # " * 50_000, ("a # " * 50_000).rstrip(" #")),
        ("#" + " \t" * 100_000, "\t"),
        ("#" + " \t" * 100_000 + "end ##", "end"),
    ],
)
def test_a_pathological_markdown_heading_line_parses_in_linear_time(line: str, title: str) -> None:
    data = f"intro\n{line}\nbody text\n".encode()
    start = time.perf_counter()
    sections = parse_document(data, "markdown")
    assert time.perf_counter() - start < 10
    assert sections[-1].heading == (title,)
    assert sections[-1].offset == len("intro\n")


def test_markdown_heading_paths_and_offsets_are_exact() -> None:
    text = MARKDOWN + "\n```\n# not a heading\n```\n#### Closed ##  \n# Top\ntail\n"
    sections = parse_document(text.encode(), "markdown")
    assert [s.heading for s in sections] == [
        ("Handbook",),
        ("Handbook", "Travel"),
        ("Handbook", "Travel", "Expenses"),
        ("Handbook", "Security"),
        ("Handbook", "Security", "Closed"),
        ("Top",),
    ]
    for section in sections:
        assert text[section.offset : section.offset + len(section.text)] == section.text
    assert "# not a heading" in sections[3].text
