"""Settings read from the environment (prefix ``RAG_``) or passed explicitly."""

from __future__ import annotations

from pathlib import Path

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

    qdrant_url: str | None = None
    qdrant_api_key: str | None = None

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        from rag.indexes import check_index_name

        return check_index_name(value)
