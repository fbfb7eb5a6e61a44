"""Which embedder a deployment uses: the HTTP service at ``url`` when set, else in-process.

``EmbedOptions`` holds plain values (built from ``Settings`` by ``Settings.embed_options``), so
the embedders never depend on the service's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.embed.base import Backend, TextEmbedder
from rag.embed.embedder import Embedder
from rag.errors import RagError


@dataclass(frozen=True)
class EmbedOptions:
    """How to reach or run an embedder (``RAG_EMBED_*``)."""

    cache_dir: Path
    batch_size: int = 64
    device: str = "auto"
    backend: Backend = "openvino-bf16"
    threads: int | None = None
    url: str | None = None
    api_key: str | None = None


def embed_device(setting: str) -> str:
    """``auto``: the first CUDA device when torch sees one, else the CPU."""
    if setting in ("cpu", "mps"):
        return setting
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RagError(f"embed device {setting!r}: this torch sees no CUDA device")
    return setting


def embedder_from(options: EmbedOptions, model: str) -> TextEmbedder:
    """The embedder ``model``: the service at ``embed_url`` when set, else in-process on the
    configured device, backend, batch size and threads. The exported backends are CPU
    runtimes, so a GPU device runs sentence-transformers' torch."""
    if options.url:
        from rag.embed.http import HttpEmbedder

        return HttpEmbedder(
            options.url,
            model,
            api_key=options.api_key,
            batch_size=options.batch_size,
        )
    device = embed_device(options.device)
    return Embedder(
        model,
        batch_size=options.batch_size,
        device=device,
        backend=options.backend if device == "cpu" else "torch",
        cache_dir=options.cache_dir,
        threads=options.threads,
    )
