"""Index definitions: which embedder and chunking an index uses (data in ``indexes/*.toml``)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rag.errors import IndexMismatchError, RagError

DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
INDEX_NAME_PATTERN = f"^{_NAME.pattern}$"  # the same, for OpenAPI documents


def check_index_name(name: str) -> str:
    if not _NAME.fullmatch(name):  # `$` alone would let a trailing newline through
        raise ValueError(
            f"invalid index name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ChunkingSpec:
    """``tokens``: chunks of ``chunk_tokens`` embedder tokens (the default, nothing truncated).
    ``document``: one chunk per page or file, cut by the embedder at its window, as BEIR's
    protocol embeds documents; for evaluation indexes, where results must match published ones.
    """

    chunk_tokens: int = 200
    overlap_tokens: int = 32
    mode: Literal["tokens", "document"] = "tokens"


@dataclass(frozen=True)
class IndexSpec:
    """What an index is made of; recorded in the store when the index is created."""

    name: str
    embed_model: str = DEFAULT_EMBED_MODEL
    chunking: ChunkingSpec = ChunkingSpec()
    sparse: str = "bm25"

    @classmethod
    def load(cls, name: str, indexes_dir: Path, embed_model: str | None = None) -> IndexSpec:
        """The definition in ``indexes_dir/NAME.toml`` (or ``default.toml``), env overrides last."""
        check_index_name(name)
        data: dict[str, Any] = {}
        for candidate in (indexes_dir / f"{name}.toml", indexes_dir / "default.toml"):
            if candidate.is_file():
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
                break
        embedder = data.get("embedder", {})
        chunking = data.get("chunking", {})
        try:
            spec = cls(
                name=name,
                embed_model=embed_model or embedder.get("model", DEFAULT_EMBED_MODEL),
                chunking=ChunkingSpec(**chunking),
                sparse=data.get("sparse", {}).get("kind", "bm25"),
            )
        except TypeError as exc:
            raise RagError(f"index definition for {name!r} is malformed: {exc}") from exc
        if spec.chunking.mode not in ("tokens", "document"):
            raise RagError(f"index {name!r}: chunking mode must be 'tokens' or 'document'")
        if spec.chunking.overlap_tokens >= spec.chunking.chunk_tokens:
            raise RagError(f"index {name!r}: overlap_tokens must be below chunk_tokens")
        return spec


@dataclass(frozen=True)
class IndexMeta:
    """The record an index carries in the store: its spec plus the embedder's dimension."""

    name: str
    embed_model: str
    dim: int
    max_tokens: int
    chunking: ChunkingSpec
    sparse: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexMeta:
        fields = dict(data)
        fields["chunking"] = ChunkingSpec(**fields.get("chunking", {}))
        return cls(**fields)

    def check_compatible(self, embed_model: str, dim: int) -> None:
        """Refuse to mix vectors of two embedders in one index."""
        if self.embed_model != embed_model or self.dim != dim:
            raise IndexMismatchError(
                f"index {self.name!r} was built with embedder {self.embed_model!r} "
                f"({self.dim} dimensions); refusing to write vectors of {embed_model!r} "
                f"({dim} dimensions). Use another --index or drop it with "
                f"`rag-index drop {self.name}`."
            )
