"""Optional second stage: a cross-encoder reads (question, passage) pairs and re-scores them."""

from __future__ import annotations

from rag.embed import resolve_model
from rag.store import Hit


class CrossEncoderReranker:
    """Top-N candidates in, top-k out, scored by a sentence-transformers CrossEncoder."""

    def __init__(self, model: str, *, batch_size: int = 32, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        self.model_id = model
        self.batch_size = batch_size
        self._model = CrossEncoder(resolve_model(model), device=device)

    def rerank(self, question: str, hits: list[Hit], top_k: int) -> list[Hit]:
        if not hits:
            return []
        pairs = [(question, str(h.payload.get("text", ""))) for h in hits]
        scores = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        rescored = [Hit(h.id, float(s), h.payload) for h, s in zip(hits, scores, strict=True)]
        rescored.sort(key=lambda h: -h.score)
        return rescored[:top_k]
