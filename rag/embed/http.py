"""The dense embedder over HTTP: an OpenAI-compatible ``/v1/embeddings`` service.

vLLM's pooling runner (``vllm serve <model> --runner pooling``) serves sentence-transformers
models this way, on a GPU share beside the chat engine. The index records the model's own name
(``model_id``), not the served one, so an index built in-process and one built through the
service hold the same vectors (cosine >= 0.999, tests/test_http_embedder.py) and mix freely.
The served name must be that model's name or its last path part (``--served-model-name``).

Vectors travel as base64 float32 and are renormalised here. Long inputs are truncated by the
service at its window, as sentence-transformers truncates in-process.
"""

from __future__ import annotations

import base64
import functools
import threading
from typing import Any

import httpx
import numpy as np

from rag.embed.base import Vectors
from rag.errors import RagError


class EmbedServiceError(RagError):
    """The embedding service cannot be reached, or answered with an error."""


def _v1(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class HttpEmbedder:
    """Encodes passages and questions through ``url``; thread-safe (one pooled client)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout: float = 60.0,
    ) -> None:
        self.url = _v1(url)
        self.model_id = model
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._lock = threading.Lock()
        self._served: str | None = None
        self._dim: int | None = None

    def close(self) -> None:
        self._client.close()

    @property
    def served_model(self) -> str:
        """The service's name for the model, asked on first use (the service may start later)."""
        if self._served is None:
            with self._lock:
                if self._served is None:
                    self._served = self._served_name()
        return self._served

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    @functools.cached_property
    def max_tokens(self) -> int:
        """Text tokens per input, from the model's own tokenizer (ingest's chunker uses it too)."""
        from rag.embed.wordpieces import WordPieces

        return WordPieces(self.model_id).max_tokens

    def encode(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self._request(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def encode_query(self, text: str) -> Vectors:
        vector: Vectors = self.encode([text])[0]
        return vector

    def _served_name(self) -> str:
        served = [str(m.get("id")) for m in self._call("GET", "/models").get("data", [])]
        wanted = {self.model_id, self.model_id.rstrip("/").rsplit("/", 1)[-1]}
        for name in served:
            if name in wanted:
                return name
        raise EmbedServiceError(
            f"the embedding service at {self.url} serves {served}, not {self.model_id!r} "
            f"(start it with --served-model-name {self.model_id})"
        )

    def _request(self, texts: list[str]) -> Vectors:
        body = {
            "model": self.served_model,
            "input": texts,
            "encoding_format": "base64",
            "truncate_prompt_tokens": -1,  # cut at the model's window, as in-process
        }
        data = sorted(self._call("POST", "/embeddings", json=body)["data"], key=_index)
        if len(data) != len(texts):
            raise EmbedServiceError(f"asked for {len(texts)} embeddings, got {len(data)}")
        vectors = np.stack([_decode(item["embedding"]) for item in data])
        self._dim = vectors.shape[1]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        result: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return result

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EmbedServiceError(f"embedding service at {self.url}: {exc}") from exc
        if response.status_code != 200:
            raise EmbedServiceError(
                f"embedding service at {self.url}{path}: HTTP {response.status_code} "
                f"{response.text[:300]}"
            )
        payload: dict[str, Any] = response.json()
        return payload


def _index(item: dict[str, Any]) -> int:
    return int(item.get("index", 0))


def _decode(embedding: str | list[float]) -> Vectors:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)
