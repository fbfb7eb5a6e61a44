"""The embedder's tokenizer without the model: token ids, offsets and counts for parse workers.

A worker that chunks text needs the embedder's exact tokens, not its weights. The model
folder's ``tokenizer.json`` is loaded with the ``tokenizers`` library alone (no torch, no
transformers); only a model without that file falls back to transformers, once, to convert
its slow tokenizer. Ids, offsets and counts equal ``rag.embed.embedder.Embedder``'s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rag.embed.base import resolve_model
from rag.errors import RagError

# A tokenizer that does not know its model's window would otherwise report ~1e30.
MAX_WINDOW = 512


class WordPieces:
    """Token ids, character offsets and counts as the embedder ``model`` sees text."""

    def __init__(self, model: str) -> None:
        from tokenizers import Tokenizer

        self.model_id = model
        folder = _model_folder(model)
        tokenizer_file = folder / "tokenizer.json"
        if tokenizer_file.is_file():
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        else:
            tokenizer = _converted_tokenizer(folder)
        # tokenizer.json may carry the padding and truncation of the model's training setup.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        config = _read_json(folder / "tokenizer_config.json")
        unk = config.get("unk_token") or getattr(tokenizer.model, "unk_token", None)
        if isinstance(unk, dict):  # an AddedToken written out in full
            unk = unk.get("content")
        self.unk_token_id: int | None = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
        special = len(tokenizer.encode("", add_special_tokens=True).ids)
        self.max_tokens: int = _window(folder, config) - special

    def token_ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        offsets: list[tuple[int, int]] = self._tokenizer.encode(
            text, add_special_tokens=False
        ).offsets
        return offsets

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _model_folder(model: str) -> Path:
    path = resolve_model(model)
    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return Path(path)
    try:  # a hub id: the tokenizer's files only, from the local cache when offline
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=["*.json", "*.txt", "*.model"]))
    except Exception as exc:  # hub errors come in many types; one message for the user
        raise RagError(f"cannot load the tokenizer of embedder {model!r}: {exc}") from exc


def _converted_tokenizer(folder: Path) -> Any:
    """A fast tokenizer built by transformers from a model that ships only a slow one."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True).backend_tokenizer
    except (OSError, ValueError, AttributeError) as exc:
        raise RagError(f"no fast tokenizer for the embedder in {folder}: {exc}") from exc


def _window(folder: Path, config: dict[str, Any]) -> int:
    """The model's window in tokens, special tokens included, as sentence-transformers reads it."""
    sbert = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(sbert, int) and sbert > 0:
        return sbert
    declared = config.get("model_max_length")
    return min(int(declared), MAX_WINDOW) if isinstance(declared, int | float) else MAX_WINDOW


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
