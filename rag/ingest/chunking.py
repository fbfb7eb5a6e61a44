"""Splitting sections into chunks sized in the embedder's own tokens, with exact character spans.

A chunk's stored text is exactly what its tokens cover. Each section is tokenised once; a
stretch that a single unknown token stands for (WordPiece turns any "word" of over 100
characters into one ``[UNK]``) or that no token covers at all (control characters) is dropped
and counted, and the section is cut around it. Short unknown tokens (an emoji) stay in place.

Within what remains, llama-index's ``SentenceSplitter`` chooses the boundaries (paragraphs,
then sentences, then phrases) and counts with the embedder's tokenizer. It is only given
bounded blocks of prose: it can go quadratic on long sections without separators, so a run of
more than ``BLOCK_TOKENS`` tokens is first cut at its best paragraph, line or sentence break,
and a block holding a long stretch without whitespace is cut into token windows instead. Its
token count is a sum over pieces, which can differ by a few tokens from the count of the
joined text, so every chunk is measured again and cut on token boundaries if it would exceed
the embedder's window: no chunk is ever silently truncated by the embedder.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rag.ingest.readers import Section, TableRows

if TYPE_CHECKING:
    from rag.embed import WordPieces
    from rag.indexes import ChunkingSpec

CountTokens = Callable[[str], int]
TokenOffsets = Callable[[str], list[tuple[int, int]]]

UNKNOWN_RUN_CHARS = 32  # an unknown token standing for more characters than this is dropped
GAP_CHARS = 256  # a stretch no token covers, longer than this, cuts the section
BLOCK_TOKENS = 4096  # the most tokens the sentence splitter is given at once
_SENTENCE_END = re.compile(r"[.!?。？！]\s*$")
# The splitter's phrase level: llama-index's default cuts at every comma and full stop, so a
# boundary could fall inside "1,644" or "3.5"; a comma or stop between two digits stays.
PHRASES = r"(?:[^,.;。？！]|(?<=\d)[,.](?=\d))+[,.;。？！]?|[,.;。？！]"
_FULL_STOPS = frozenset("。？！")  # sentence ends of scripts written without spaces


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    heading: tuple[str, ...]
    char_start: int
    char_end: int
    location: str = ""  # as its section's, or "sheet Budget, rows 2–40" for a table's rows
    member: str = ""
    ocr: bool = False


@dataclass(frozen=True)
class Chunked:
    """A document's chunks and what was left out of them: runs no token represents."""

    chunks: list[Chunk]
    dropped_runs: int = 0
    dropped_chars: int = 0


@dataclass
class _Drops:
    runs: int = 0
    chars: int = 0

    def add(self, chars: int) -> None:
        self.runs += 1
        self.chars += chars


class Chunker:
    """Cuts sections into chunks of at most ``max_tokens`` embedder tokens."""

    def __init__(
        self,
        *,
        chunk_tokens: int,
        overlap_tokens: int,
        max_tokens: int,
        token_ids: Callable[[str], list[int]],
        token_offsets: TokenOffsets,
        whole_sections: bool = False,
        unk_token_id: int | None = None,
    ) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        self.chunk_tokens = min(chunk_tokens, max_tokens)
        self.max_tokens = max_tokens
        self._token_ids = token_ids
        self._token_offsets = token_offsets
        self.whole_sections = whole_sections
        self.unk_token_id = unk_token_id
        # A token covers at least a character (a byte-level one, at least a quarter of one).
        self._long_word = re.compile(rf"[^\s。？！]{{{self.chunk_tokens // 8 + 1},}}")
        self._splitter = SentenceSplitter(
            chunk_size=self.chunk_tokens,
            chunk_overlap=min(overlap_tokens, self.chunk_tokens // 2),
            tokenizer=token_ids,
            chunking_tokenizer_fn=_sentences_and_lines,
            secondary_chunking_regex=PHRASES,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._token_ids(text))

    def chunk(self, sections: list[Section]) -> Chunked:
        drops = _Drops()
        chunks = [chunk for section in sections for chunk in self._chunk_section(section, drops)]
        return Chunked(chunks, drops.runs, drops.chars)

    def _chunk_section(self, section: Section, drops: _Drops) -> Iterator[Chunk]:
        if self.whole_sections:
            text = section.text.strip()
            start = section.text.find(text)
            yield self._chunk(section, text, start, start + len(text))
            return
        if section.table is not None:
            yield from self._chunk_table(section, section.table, drops)
            return
        text = section.text
        offsets = self._token_offsets(text)
        for lo, hi in self._runs(text, offsets, drops):
            for start, end in self._block_spans(text, offsets, lo, hi):
                yield self._chunk(section, text[start:end], start, end)

    @staticmethod
    def _chunk(
        section: Section, text: str, start: int, end: int, location: str | None = None
    ) -> Chunk:
        return Chunk(
            text=text,
            page=section.page,
            heading=section.heading,
            char_start=section.offset + start,
            char_end=section.offset + end,
            location=section.location if location is None else location,
            member=section.member,
            ocr=section.ocr,
        )

    def _chunk_table(self, section: Section, table: TableRows, drops: _Drops) -> Iterator[Chunk]:
        """Whole rows per chunk, each chunk headed by the table's header line.

        A chunk's text is the header line, a line break, then its rows as they stand in the
        section; its character span is that of its rows. A row longer than a chunk on its own
        goes through the prose path (cut at phrases, never inside a number).
        """
        text = section.text
        lines = _line_spans(text)
        header_end = lines[0][1]
        head = text[:header_end]
        rows = list(zip(lines[1:], table.rows, strict=False))
        budget = self.chunk_tokens - self.count_tokens(head) - 1
        i = 0
        while i < len(rows):
            (start, end), _ = rows[i]
            j, used = i, 0
            while j < len(rows):
                cost = self.count_tokens(text[rows[j][0][0] : rows[j][0][1]]) + 1
                if j > i and used + cost > budget:
                    break
                used += cost
                j += 1
            if j == i + 1 and used > budget:  # one row longer than a chunk
                row = replace(section, text=text[start:end], offset=section.offset + start)
                row = replace(row, table=None, location=_rows_location(table, rows[i][1]))
                yield from self._chunk_section(row, drops)
                i = j
                continue
            while True:
                end = rows[j - 1][0][1]
                body = f"{head}\n{text[start:end]}"
                if j - 1 == i or self.count_tokens(body) <= self.max_tokens:
                    break
                j -= 1  # the joined text can count a few tokens more than its parts
            first, last = rows[i][1], rows[j - 1][1]
            yield self._chunk(section, body, start, end, _rows_location(table, first, last))
            i = j

    def _runs(
        self, text: str, offsets: list[tuple[int, int]], drops: _Drops
    ) -> Iterator[tuple[int, int]]:
        """Token index ranges ``[lo, hi)`` left between the stretches no token represents."""
        lo = previous_end = 0
        for i, (a, b) in enumerate(offsets):
            if a - previous_end > GAP_CHARS or b - a > UNKNOWN_RUN_CHARS:  # rare: look closer
                if a - previous_end > GAP_CHARS:
                    if i > lo:
                        yield lo, i
                    lo = i
                    if text[previous_end:a].strip():
                        drops.add(a - previous_end)
                if b - a > UNKNOWN_RUN_CHARS and self._is_unknown(text[a:b]):
                    if i > lo:
                        yield lo, i
                    lo = i + 1
                    drops.add(b - a)
            previous_end = b
        if len(offsets) > lo:
            yield lo, len(offsets)
        if len(text) - previous_end > GAP_CHARS and text[previous_end:].strip():
            drops.add(len(text) - previous_end)

    def _is_unknown(self, text: str) -> bool:
        return self.unk_token_id is not None and self._token_ids(text) == [self.unk_token_id]

    def _block_spans(
        self, text: str, offsets: list[tuple[int, int]], lo: int, hi: int
    ) -> Iterator[tuple[int, int]]:
        """Chunk spans of the tokens ``[lo, hi)``, handed to the splitter in bounded blocks."""
        while lo < hi:
            end = hi if hi - lo <= BLOCK_TOKENS else _best_cut(text, offsets, lo, lo + BLOCK_TOKENS)
            a, b = offsets[lo][0], offsets[end - 1][1]
            if self._unbroken(text, offsets, lo, end):
                yield from self._windows(text, offsets[lo:end])
            else:
                for start, stop in self._spans(text[a:b]):
                    yield from self._enforce_limit(text, a + start, a + stop)
            lo = end

    def _unbroken(self, text: str, offsets: list[tuple[int, int]], lo: int, hi: int) -> bool:
        """Whether more than half a chunk of tokens stands with no space or full stop between.

        The splitter would cut such a stretch character by character, quadratic in its length.
        """
        bound = self.chunk_tokens // 2
        if not self._long_word.search(text, offsets[lo][0], offsets[hi - 1][1]):
            return False  # no word is long enough to hold more tokens than the bound
        run = 1
        for j in range(lo + 1, hi):
            gap = text[offsets[j - 1][1] : offsets[j][0]]
            broken = any(c.isspace() for c in gap) or text[offsets[j - 1][0]] in _FULL_STOPS
            run = 1 if broken else run + 1
            if run > bound:
                return True
        return False

    def _spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Character spans of the splitter's chunks inside ``text``."""
        try:
            pieces = self._splitter.split_text(text)
        except ValueError:  # one "word" longer than a chunk: fall back to token windows
            yield from self._token_windows(text, 0, len(text))
            return
        cursor = 0
        for piece in pieces:
            if not piece:
                continue
            start = text.find(piece, cursor)
            if start < 0:  # the splitter normalised something: fall back to token windows
                yield from self._token_windows(text, cursor, len(text))
                return
            end = start + len(piece)
            yield start, end
            cursor = start + 1

    def _enforce_limit(self, text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        if self.count_tokens(text[start:end]) <= self.max_tokens:
            yield start, end
        else:
            yield from self._token_windows(text, start, end)

    def _token_windows(self, text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Consecutive spans of ``chunk_tokens`` tokens each, cut on token boundaries."""
        offsets = [(start + a, start + b) for a, b in self._token_offsets(text[start:end])]
        yield from self._windows(text, offsets)

    def _windows(self, text: str, offsets: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """Spans of ``chunk_tokens`` consecutive tokens (given by their offsets in ``text``)."""
        step = self.chunk_tokens
        for i in range(0, len(offsets), step):
            window = offsets[i : i + step]
            a, b = window[0][0], window[-1][1]
            while self.count_tokens(text[a:b]) > self.max_tokens and len(window) > 1:
                window = window[:-1]  # re-tokenising a cut text can add a piece
                b = window[-1][1]
            if text[a:b].strip():
                yield a, b


def _rows_location(table: TableRows, first: int, last: int | None = None) -> str:
    rows = f"row {first}" if last is None or last == first else f"rows {first}–{last}"
    return f"{table.label}, {rows}" if table.label else rows


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line, line breaks excluded."""
    spans, start = [], 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            spans.append((start, len(text)))
            return spans
        spans.append((start, end))
        start = end + 1


def _sentences_and_lines(text: str) -> list[str]:
    """The splitter's sentence level: sentences, each cut after its line breaks too, so a
    boundary can fall at a line end (a table row of a PDF is a line) but never inside one."""
    pieces: list[str] = []
    for sentence in _sentence_splitter()(text):
        pieces.extend(_LINE.findall(sentence))
    return pieces


@functools.cache
def _sentence_splitter() -> Callable[[str], list[str]]:
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

    return split_by_sentence_tokenizer()


_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def _best_cut(text: str, offsets: list[tuple[int, int]], lo: int, limit: int) -> int:
    """The token index in the second half of ``(lo, limit]`` after the strongest break."""
    best, best_rank = limit, -1
    for j in range(lo + (limit - lo) // 2, limit + 1):
        gap = text[offsets[j - 1][1] : offsets[j][0]]
        if "\n\n" in gap:
            rank = 3
        elif "\n" in gap:
            rank = 2
        elif gap and _SENTENCE_END.search(text, offsets[j - 1][0], offsets[j][0]):
            rank = 1
        else:
            rank = 0 if gap else -1
        if rank >= best_rank:
            best, best_rank = j, rank
    return best


def build_chunker(pieces: WordPieces, chunking: ChunkingSpec) -> Chunker:
    """The chunker an index's spec asks for, counting with the embedder's own tokens."""
    return Chunker(
        chunk_tokens=chunking.chunk_tokens,
        overlap_tokens=chunking.overlap_tokens,
        max_tokens=pieces.max_tokens,
        token_ids=pieces.token_ids,
        token_offsets=pieces.token_offsets,
        whole_sections=chunking.mode == "document",
        unk_token_id=pieces.unk_token_id,
    )
