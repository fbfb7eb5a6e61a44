"""Splitting sections into chunks sized in the embedder's own tokens, with exact character spans.

llama-index's ``SentenceSplitter`` chooses the boundaries (paragraphs, then sentences, then
phrases) and counts with the embedder's tokenizer. Its token count is a sum over pieces, which
can differ by a few tokens from the count of the joined text, so every chunk is measured again
and cut on token boundaries if it would exceed the embedder's window: no chunk is ever silently
truncated by the embedder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rag.documents import Section

CountTokens = Callable[[str], int]
TokenOffsets = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    heading: tuple[str, ...]
    char_start: int
    char_end: int


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
    ) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        self.chunk_tokens = min(chunk_tokens, max_tokens)
        self.max_tokens = max_tokens
        self._token_ids = token_ids
        self._token_offsets = token_offsets
        self.whole_sections = whole_sections
        self._splitter = SentenceSplitter(
            chunk_size=self.chunk_tokens,
            chunk_overlap=min(overlap_tokens, self.chunk_tokens // 2),
            tokenizer=token_ids,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._token_ids(text))

    def chunk(self, sections: list[Section]) -> list[Chunk]:
        return [chunk for section in sections for chunk in self._chunk_section(section)]

    def _chunk_section(self, section: Section) -> Iterator[Chunk]:
        if self.whole_sections:
            text = section.text.strip()
            start = section.text.find(text)
            yield Chunk(
                text,
                section.page,
                section.heading,
                section.offset + start,
                section.offset + start + len(text),
            )
            return
        for start, end in self._spans(section.text):
            for a, b in self._enforce_limit(section.text, start, end):
                yield Chunk(
                    text=section.text[a:b],
                    page=section.page,
                    heading=section.heading,
                    char_start=section.offset + a,
                    char_end=section.offset + b,
                )

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
        offsets = self._token_offsets(text[start:end])
        step = self.chunk_tokens
        for i in range(0, len(offsets), step):
            window = offsets[i : i + step]
            a, b = start + window[0][0], start + window[-1][1]
            while self.count_tokens(text[a:b]) > self.max_tokens and len(window) > 1:
                window = window[:-1]  # re-tokenising a cut text can add a piece
                b = start + window[-1][1]
            if text[a:b].strip():
                yield a, b
