"""The exported embedding backends agree with sentence-transformers' torch on real text, and
their converted models are built once per cache folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.embed import Backend, Embedder, Vectors
from rag.errors import RagError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Real prose of different lengths; the last is longer than the model's window (truncated alike).
TEXTS = [
    "What is the capital of France?",
    "Net sales increased 8% compared to the same quarter a year ago, driven by services.",
    "The company repurchased $15.0 billion of its common stock and paid dividends and "
    "dividend equivalents of $3.7 billion during the quarter.",
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy "
    "needed to power the cell's biochemical reactions, stored in adenosine triphosphate.",
    "Risk factors: the Company's operations and performance depend significantly on global "
    "and regional economic conditions and adverse economic conditions can materially "
    "adversely affect the Company's business, results of operations and financial condition.",
    " ".join(
        f"Paragraph {i}: supply chain constraints, component shortages and foreign exchange "
        "rates affected gross margin, while operating expenses grew with headcount."
        for i in range(30)
    ),
]

# Least cosine with torch's vector that each exported backend must keep.
AGREEMENT: dict[Backend, float] = {"onnx": 0.9999, "openvino": 0.9999, "openvino-bf16": 0.999}


@pytest.fixture(scope="module")
def torch_vectors(embedder: Embedder) -> Vectors:
    return embedder.encode(TEXTS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-cache")


@pytest.mark.parametrize("backend", list(AGREEMENT))
def test_exported_backend_vectors_match_torch(
    backend: Backend, torch_vectors: Vectors, cache_dir: Path
) -> None:
    embedder = Embedder(MODEL, backend=backend, cache_dir=cache_dir)
    vectors = embedder.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == torch_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * torch_vectors, axis=1)
    assert cosines.min() >= AGREEMENT[backend], cosines
    query = embedder.encode_query(TEXTS[0])
    assert float(query @ torch_vectors[0]) >= AGREEMENT[backend]


def test_second_construction_reuses_the_exported_model(tmp_path: Path) -> None:
    first = Embedder(MODEL, backend="onnx", cache_dir=tmp_path)
    exported = first.model_dir / "model.onnx"
    before = exported.stat()
    second = Embedder(MODEL, backend="onnx", cache_dir=tmp_path)
    after = (second.model_dir / "model.onnx").stat()
    assert second.model_dir == first.model_dir
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in first.model_dir.iterdir()) == ["model.onnx"]
    np.testing.assert_array_equal(second.encode(TEXTS[:2]), first.encode(TEXTS[:2]))


def test_exported_backend_without_a_cache_folder_is_refused() -> None:
    with pytest.raises(RagError, match="cache folder"):
        Embedder(MODEL, backend="onnx")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(RagError, match="unknown embed backend"):
        Embedder(MODEL, backend="tensorrt")  # type: ignore[arg-type]
