"""Chunks hold exactly what their tokens cover, within the embedder's window, on any text."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

from rag.embed import Embedder, WordPieces
from rag.indexes import ChunkingSpec
from rag.ingest.chunking import Chunked, build_chunker
from rag.ingest.readers import Section, parse_document
from tests.documents import MARKDOWN, PAGE_ONE, PAGE_TWO

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TWO_MB = 2_000_000


@pytest.fixture(scope="module")
def pieces() -> WordPieces:
    return WordPieces(MODEL)


def _hostile(kind: str) -> str:
    rng = random.Random(kind)
    if kind == "no spaces":
        return "a" * TWO_MB
    if kind == "only punctuation":
        return "".join(rng.choice("!?.,;:-()[]") for _ in range(TWO_MB))
    if kind == "one line of words":
        words = ["revenue", "grew", "in", "every", "segment", "during", "the", "quarter"]
        return " ".join(rng.choice(words) for _ in range(TWO_MB // 6))[:TWO_MB]
    if kind == "binary as cp1252":
        return rng.randbytes(TWO_MB).decode("cp1252", errors="replace")
    if kind == "newlines":
        return "\n" * TWO_MB
    raise ValueError(kind)


def _check_spans(sections: list[Section], chunked: Chunked, pieces: WordPieces) -> None:
    by_offset = {(s.page, s.heading, s.offset): s for s in sections}
    for chunk in chunked.chunks:
        owner = next(
            s
            for (page, heading, offset), s in by_offset.items()
            if page == chunk.page
            and heading == chunk.heading
            and offset <= chunk.char_start
            and chunk.char_end <= offset + len(s.text)
        )
        assert owner.text[chunk.char_start - owner.offset : chunk.char_end - owner.offset] == (
            chunk.text
        )
        assert pieces.count(chunk.text) <= pieces.max_tokens


VARIED = [
    "Plain English text, with punctuation; and numbers 3.14159 and 10,000.",
    "Crème brûlée, naïve café, Ærøskøbing, İstanbul, straße, Ελληνικά, русский текст.",
    "東京都の人口は約1400万人です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji 😀🎉👍🏽 and symbols ™ © ® ∑ ∫ √ ≤ ≥ → ← and a family 👨‍👩‍👧.",
    "| col a | col b |\n|---|---|\n| 1,234.5 | tabular;data |\n\tTabbed\r\nCRLF line",
    "supercalifragilisticexpialidocious " + "x" * 150 + " pneumonoultramicroscopic",
    "zero\u200bwidth\u00a0space soft\u00adhyphen control\x07char \ufffd replacement",
    "",
    "   \n\n  ",
]


def test_wordpieces_tokenise_exactly_like_the_embedder(
    embedder: Embedder, pieces: WordPieces
) -> None:
    for text in [*VARIED, " ".join(VARIED) * 50]:
        assert pieces.token_ids(text) == embedder.token_ids(text)
        assert pieces.token_offsets(text) == embedder.token_offsets(text)
        assert pieces.count(text) == embedder.count_tokens(text)
    assert pieces.max_tokens == embedder.max_tokens == 254
    assert embedder.token_ids("😀") == [pieces.unk_token_id]


def test_wordpieces_load_without_torch_or_transformers() -> None:
    code = (
        "import sys; from rag.embed.wordpieces import WordPieces; "
        f"assert WordPieces({MODEL!r}).count('hello world') == 2; "
        "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_run_no_token_represents_is_dropped_counted_and_absent_from_chunks(
    pieces: WordPieces,
) -> None:
    run = "q" * 200_000
    text = f"{PAGE_ONE}\n{run}\n{PAGE_TWO}"
    chunked = build_chunker(pieces, ChunkingSpec()).chunk([Section(text, page=3)])
    assert (chunked.dropped_runs, chunked.dropped_chars) == (1, len(run))
    assert all("qqq" not in chunk.text for chunk in chunked.chunks)
    joined = " ".join(chunk.text for chunk in chunked.chunks)
    assert "forty engineers" in joined
    assert "helium reserves" in joined
    _check_spans([Section(text, page=3)], chunked, pieces)


def test_short_unknown_tokens_stay_inside_their_chunk(pieces: WordPieces) -> None:
    text = "We celebrated the launch 🎉 with the whole team."
    chunked = build_chunker(pieces, ChunkingSpec()).chunk([Section(text)])
    assert [chunk.text for chunk in chunked.chunks] == [text]
    assert (chunked.dropped_runs, chunked.dropped_chars) == (0, 0)


@pytest.mark.parametrize(
    "kind", ["no spaces", "only punctuation", "one line of words", "binary as cp1252", "newlines"]
)
def test_any_two_megabytes_of_hostile_text_chunk_in_seconds_into_exact_spans(
    kind: str, pieces: WordPieces
) -> None:
    sections = [Section(_hostile(kind), offset=7)]
    start = time.perf_counter()
    chunked = build_chunker(pieces, ChunkingSpec()).chunk(sections)
    assert time.perf_counter() - start < 60
    _check_spans(sections, chunked, pieces)
    if kind == "no spaces":
        assert (chunked.chunks, chunked.dropped_runs, chunked.dropped_chars) == ([], 1, TWO_MB)
    elif kind == "newlines":
        assert (chunked.chunks, chunked.dropped_runs) == ([], 0)
    else:
        assert len(chunked.chunks) > TWO_MB // 2000


def test_long_prose_is_chunked_without_losing_a_word(pieces: WordPieces) -> None:
    paragraphs = [f"Paragraph {i}. {PAGE_ONE} {PAGE_TWO}" for i in range(400)]
    text = "\n\n".join(paragraphs)  # about 24,000 tokens: several blocks for the splitter
    chunked = build_chunker(pieces, ChunkingSpec()).chunk([Section(text)])
    _check_spans([Section(text)], chunked, pieces)
    covered = bytearray(len(text))
    for chunk in chunked.chunks:
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    assert chunked.dropped_runs == 0
    assert all(len(chunk.text) > 100 for chunk in chunked.chunks)


def test_markdown_chunks_keep_heading_paths_and_exact_offsets(pieces: WordPieces) -> None:
    sections = parse_document(MARKDOWN.encode(), "markdown")
    chunked = build_chunker(pieces, ChunkingSpec()).chunk(sections)
    assert [chunk.heading for chunk in chunked.chunks] == [s.heading for s in sections]
    for chunk in chunked.chunks:
        assert MARKDOWN[chunk.char_start : chunk.char_end] == chunk.text


def test_the_document_mode_keeps_each_section_whole(pieces: WordPieces) -> None:
    sections = [Section(f"  {PAGE_ONE}  ", page=1), Section(PAGE_TWO * 20, page=2)]
    chunker = build_chunker(pieces, ChunkingSpec(mode="document"))
    chunks = chunker.chunk(sections).chunks
    assert [chunk.text for chunk in chunks] == [PAGE_ONE, PAGE_TWO * 20]
    assert (chunks[0].char_start, chunks[0].char_end) == (2, 2 + len(PAGE_ONE))
    tokens = build_chunker(pieces, ChunkingSpec(chunk_tokens=64, overlap_tokens=8))
    assert max(pieces.count(c.text) for c in tokens.chunk(sections).chunks) <= 64
