"""Settings read from the environment (prefix ``RAG_``) or passed explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "rag"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "rag"


class Settings(BaseSettings):
    """Every knob of the service; each field reads ``RAG_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    indexes_dir: Path = Path("indexes")
    index: str = "default"

    embed_model: str | None = None
    embed_batch_size: int = Field(default=64, ge=1, le=4096)
    # Threads torch may use for embedding in this process (unset: torch's default, all cores).
    # On a CPU box that also runs the engine, 1 keeps the service off the engine's core.
    torch_threads: int | None = Field(default=None, ge=1)

    qdrant_url: str | None = None
    qdrant_api_key: str | None = None

    # The engine: an external vLLM by URL, or one this process starts.
    llm_url: str | None = None
    llm_model: str | None = None  # served name; discovered from /v1/models when unset
    llm_api_key: str | None = None
    # The served model's tokenizer (folder or hub id) to count prompts in-process; unset: the
    # engine's /tokenize (the managed engine's folder is used automatically).
    llm_tokenizer: str | None = None
    llm_timeout: float = Field(default=120.0, gt=0)
    # Small models loop under greedy decoding; 1.1 stops that and leaves large models alone.
    llm_repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    engine_model: str | None = None
    engine_max_model_len: int | None = Field(default=None, ge=512)
    engine_port: int = Field(default=8001, ge=1, le=65535)
    engine_python: str | None = None
    engine_start_timeout: float = Field(default=900.0, gt=0)
    engine_kv_cache_gib: int = Field(default=2, ge=1)
    engine_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)

    # Asking.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    top_k: int = Field(default=5, ge=1, le=100)
    max_output_tokens: int = Field(default=512, ge=1)
    max_question_chars: int = Field(default=4000, ge=1)
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    hybrid_fusion: Literal["dbsf", "rrf"] = "dbsf"
    passage_order: Literal["canonical", "score"] = "canonical"
    rerank_model: str | None = None
    rerank_candidates: int = Field(default=30, ge=1, le=1000)

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        from rag.indexes import check_index_name

        return check_index_name(value)
