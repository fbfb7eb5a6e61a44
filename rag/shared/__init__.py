"""State that API replicas share through Redis (RAG_REDIS_URL): the connection and its outages,
the live replica count, index generations; rate limits and keys in rag/guard/shared_*.py."""

from __future__ import annotations

from rag.shared.generations import IndexGenerations
from rag.shared.redis import SharedState, SharedStateDown
from rag.shared.replicas import ReplicaCount

__all__ = ["IndexGenerations", "ReplicaCount", "SharedState", "SharedStateDown"]
