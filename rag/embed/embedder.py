"""The dense embedder: sentence-transformers, with offline resolution of packaged models.

The tokenizer is always the sentence-transformers model's own; the forward pass runs on a
chosen backend. ``torch`` is sentence-transformers itself. The others run a graph exported
once from that same model (pooling and normalisation included) and cached under
``cache_dir``: ``onnx`` (onnxruntime, fp32), ``openvino`` (OpenVINO forced to fp32) and
``openvino-bf16`` (OpenVINO's own default: bfloat16 on CPUs that do it natively, AMX or
AVX-512 BF16, fp32 elsewhere).

On a 2-core Xeon with AMX, ``openvino-bf16`` embedded 200-token chunks 2-6x as fast as torch
(noisy, shared CPU) with SciFact nDCG@10 0.6594 against torch's 0.6602; onnxruntime fp32 was
no faster than torch, and its dynamic int8 was not kept (no faster, cosine to torch 0.988).
``python -m bench.embedders`` measures them. Exports are written to a temporary name and
renamed into place, so concurrent first uses never see a partial file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.embed.base import BACKENDS, Backend, Vectors, resolve_model
from rag.errors import RagError

# A batch of token arrays (input_ids, attention_mask, ...) -> normalised vectors.
Forward = Callable[[dict[str, npt.NDArray[np.int64]]], Vectors]

_build_lock = threading.Lock()


class Embedder:
    """Encodes passages and questions into normalised vectors (cosine = dot product)."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        backend: Backend = "torch",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if backend not in BACKENDS:
            raise RagError(f"unknown embed backend {backend!r}; choose one of {BACKENDS}")
        if backend != "torch" and device != "cpu":
            raise RagError(f"embed backend {backend!r} runs on the CPU only, not on {device!r}")
        self.model_id = model
        self.batch_size = batch_size
        self.backend: Backend = backend
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
        self._window = int(window)
        self.max_tokens: int = self._window - self._special_tokens()
        self._forward: Forward | None = None
        if backend != "torch":
            if cache_dir is None:
                raise RagError(f"embed backend {backend!r} needs a cache folder for its model")
            self.model_dir = exported_model_dir(cache_dir, path)
            self._forward = self._load_backend(backend, self.model_dir, threads)

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
        if self._forward is not None:
            return self._encode_exported(texts, self._forward)
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

    def close(self) -> None:
        """Nothing to release: the model goes with the object."""

    def _tokenize(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        enc = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._window, return_tensors="np"
        )
        return {name: np.asarray(array, dtype=np.int64) for name, array in enc.items()}

    def _encode_exported(self, texts: list[str], forward: Forward) -> Vectors:
        # Longest first, as sentence-transformers does: batches of similar length pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors = forward(self._tokenize([texts[i] for i in rows]))
            # Renormalised here: the graph normalises, but bf16 arithmetic drifts a little.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[rows] = vectors / np.maximum(norms, 1e-12)
        return out

    def _load_backend(self, backend: Backend, folder: Path, threads: int | None) -> Forward:
        fp32 = folder / "model.onnx"
        with _build_lock:
            if not fp32.exists():
                _export_onnx(self._model, self._tokenize(["a", "a b"]), fp32)
        if backend == "onnx":
            return _onnxruntime_forward(fp32, threads)
        if backend == "openvino":
            return _openvino_forward(fp32, folder / "openvino-f32", "f32", threads)
        return _openvino_forward(fp32, folder / "openvino-default", None, threads)


def exported_model_dir(cache_dir: Path, model_path: str) -> Path:
    """``cache_dir/embedders/<name>-<hash>``: the hash covers the model's files and sizes."""
    source = Path(model_path)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    key = "\n".join(
        [str(source.resolve())] + [f"{p.relative_to(source)}:{p.stat().st_size}" for p in files]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    folder = cache_dir / "embedders" / f"{source.name or 'model'}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def _export_onnx(model: Any, sample: dict[str, npt.NDArray[np.int64]], target: Path) -> None:
    """The whole sentence-transformers pipeline (encoder, pooling, normalise) as one graph."""
    import warnings

    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self, inner: Any, names: list[str]) -> None:
            super().__init__()
            self.inner = inner
            self.names = names

        def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
            features = dict(zip(self.names, arrays, strict=True))
            embedding: torch.Tensor = self.inner(features)["sentence_embedding"]
            return torch.nn.functional.normalize(embedding, p=2.0, dim=1)

    names = list(sample)
    args = tuple(torch.from_numpy(sample[name]) for name in names)
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    tmp = _temporary(target)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that are constant
        torch.onnx.export(
            Pipeline(model.eval(), names),
            args,
            str(tmp),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)


def _onnxruntime_forward(path: Path, threads: int | None) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def forward(batch: dict[str, npt.NDArray[np.int64]]) -> Vectors:
        feeds = {name: array for name, array in batch.items() if name in wanted}
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32)

    return forward


def _openvino_forward(
    path: Path, cache: Path, precision: str | None, threads: int | None
) -> Forward:
    """``precision`` None: OpenVINO chooses (bf16 where the CPU has native bf16)."""
    import openvino as ov

    config: dict[str, Any] = {"CACHE_DIR": str(cache)}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    wanted = {name for port in compiled.inputs for name in port.get_names()}

    def forward(batch: dict[str, npt.NDArray[np.int64]]) -> Vectors:
        request = compiled.create_infer_request()  # one per call: safe across threads
        result = request.infer({name: array for name, array in batch.items() if name in wanted})
        return np.asarray(result[compiled.output(0)], dtype=np.float32)

    return forward
