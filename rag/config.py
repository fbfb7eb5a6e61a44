"""Settings read from the environment (prefix ``RAG_``) or passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.embed import Backend, EmbedOptions


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
    # Runtime of the embedder's forward pass (rag/embed/embedder.py). `python -m bench.embedders`
    # on a 2-core AMX Xeon: openvino-bf16 ~2x torch's chunks/s, SciFact nDCG@10 within 0.001.
    # Exported backends build their model once under cache_dir; "torch" needs no export.
    embed_backend: Backend = "openvino-bf16"
    # Embedding on a GPU: the device of the in-process embedder (auto: CUDA when torch sees a
    # GPU, where it runs torch, else the CPU on embed_backend), or an OpenAI-compatible
    # /v1/embeddings service (vLLM's pooling runner) that the api and ingest use instead.
    embed_device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    embed_url: str | None = None
    embed_api_key: str | None = None

    # Ingestion: what may be read, and the worker processes that parse and chunk.
    # Files larger than this are skipped after a stat, before any byte is read.
    max_file_mb: float = Field(default=100.0, gt=0)
    # Parse-and-chunk worker processes (unset: one per core but one, which the embedder uses).
    ingest_workers: int | None = Field(default=None, ge=1, le=64)
    # A file whose parse takes longer fails alone; its worker is replaced.
    parse_timeout_s: float = Field(default=60.0, gt=0)
    # A worker whose resident memory passes this is killed; its file fails alone.
    worker_memory_mb: int = Field(default=1024, ge=128)
    # OCR of scanned PDF pages and images with tesseract: "auto" (on when it is installed) or
    # "off"; a scan that cannot be OCR'd is skipped with the reason.
    ocr: Literal["auto", "off"] = "auto"
    ocr_languages: str = Field(default="eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")
    # Each OCR'd page has this long of its own, on top of RAG_PARSE_TIMEOUT_S for the file.
    ocr_page_timeout_s: float = Field(default=60.0, gt=0)
    # Archives and mails: members (attachments) and uncompressed megabytes, checked up front.
    archive_max_members: int = Field(default=1000, ge=1)
    archive_max_mb: float = Field(default=200.0, gt=0)
    # Ingestion over HTTP (rag/ingest/jobs.py): folders a sync request may name, separated like PATH
    # (":"); unset: none, so only uploads and callers holding the local service record's token
    # or an admin key (any folder the service can read) may sync.
    ingest_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Free space kept on the data dir's file system: a store write or an upload that would
    # leave less is refused (disk_full, HTTP 507), since the embedded store dies of SIGBUS on a
    # full disk (0: never checked).
    min_free_mb: int = Field(default=512, ge=0)
    # Most megabytes of uploaded files kept for one index; an upload that would pass it gets 413
    # (0: no quota).
    uploads_max_mb: float = Field(default=1024.0, ge=0)
    # Threads torch may use for embedding in this process (unset: torch's default, all cores).
    # On a CPU box that also runs the engine, 1 keeps the service off the engine's core.
    torch_threads: int | None = Field(default=None, ge=1)

    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    # A Qdrant cluster: the shards of each collection this service creates, and the copies of
    # each shard (unset: Qdrant's defaults, one shard per node and one copy). Fixed at creation.
    qdrant_shard_number: int | None = Field(default=None, ge=1)
    qdrant_replication_factor: int | None = Field(default=None, ge=1)

    # The engine: an external vLLM by URL, or one this process starts.
    llm_url: str | None = None
    llm_model: str | None = None  # served name; discovered from /v1/models when unset
    llm_api_key: str | None = None
    # The served model's tokenizer (folder or hub id) to count prompts in-process; unset: the
    # engine's /tokenize (the managed engine's folder is used automatically).
    llm_tokenizer: str | None = None
    # The context window prompts are fitted to (top_k "auto" fills it); unset: the engine's
    # max_model_len. Set it to plan for a longer window than the engine reports (tests do).
    llm_max_model_len: int | None = Field(default=None, ge=512)
    # Passages of the default index counted at start-up, in the background, so that the first
    # long-context asks are fitted from remembered counts too (0: counted when first retrieved).
    prompt_warm_passages: int = Field(default=0, ge=0, le=1_000_000)
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
    # GPU engine: most tokens of one long prompt's prefill per engine step, so short asks get
    # their first token while a long prompt is prefilled (0: vLLM's default, no cap).
    engine_long_prefill_tokens: int = Field(default=4096, ge=0)
    # More arguments for the managed engine's command line, split like a shell would
    # (e.g. "--load-format dummy --enforce-eager"); they come last, so they win.
    engine_extra_args: str = ""

    # Asking.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Names a request's Host header may give, comma-separated ("*": any; "*.example.com": its
    # subdomains); unset: localhost, 127.0.0.1, [::1] and api_host when it is a specific address.
    # Other hosts get 400: a keyless service on localhost stays out of reach of DNS rebinding.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds a connection has to send a request's headers, from its first byte (or from the
    # connection, for the first request); slower or silent ones are closed (408).
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Open connections at most; a request on one more gets 503 with Retry-After.
    max_connections: int = Field(default=1000, ge=1)
    # Swagger UI at /docs, served from the package (no third-party script); off: 404.
    api_docs: bool = False
    top_k: int = Field(default=5, ge=1, le=100)
    max_output_tokens: int = Field(default=512, ge=1)
    max_question_chars: int = Field(default=4000, ge=1)
    # Requests with a larger body get 413 before more of it is read (a question is <= 4000 chars).
    max_request_bytes: int = Field(default=65536, ge=1024)
    # The body limit of /v1/chat/completions and /v1/completions instead: chat UIs resend the
    # whole conversation and ~26 KB of tool definitions (Open WebUI) with every question.
    chat_max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Chat completions end their content with the list of the passages cited ("Sources:") unless
    # the request's `sources` says otherwise: chat UIs show only the content.
    chat_sources: bool = True
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    hybrid_fusion: Literal["dbsf", "rrf"] = "dbsf"
    passage_order: Literal["canonical", "score"] = "canonical"
    rerank_model: str | None = None
    rerank_candidates: int = Field(default=30, ge=1, le=1000)
    # Vectors of the latest questions kept, so a repeated question is not embedded again
    # (0: none kept; every ask embeds its question).
    query_cache_size: int = Field(default=4096, ge=0, le=1_000_000)
    # Conversations (rag/ask/conversation.py): the earlier turns of an ask used, at most this
    # many exchanges (question and answer) and this many characters of them, the newest kept
    # (more is cut, never refused); a follow-up's rewrite into a standalone query waits this
    # long for the engine (rag/ask/rewrite.py; 0: never rewritten, the fallback query always).
    history_max_turns: int = Field(default=20, ge=0, le=1000)
    history_max_chars: int = Field(default=32_000, ge=0, le=10_000_000)
    rewrite_timeout_s: float = Field(default=5.0, ge=0, le=600)

    # Access: API keys (rag/guard/keys.py) and per-key rate limits (rag/guard/ratelimit.py).
    # auto: keys are required once the key file holds one; required: always (no key file, no
    # access); off: never (a trusted network only; every caller reads every index).
    auth: Literal["auto", "required", "off"] = "auto"
    # The key file; unset: <data_dir>/keys.json (the compose api and ingest services share it).
    keys_file: Path | None = None
    # Let Prometheus scrape /metrics without a key.
    metrics_public: bool = False
    # Defaults for keys without their own limits; 0 = unlimited. A key may burst max(1, rps).
    rate_limit_rps: float = Field(default=10.0, ge=0)
    rate_limit_tokens_per_minute: int = Field(default=1_000_000, ge=0)

    # Shared state of API replicas (rag/shared/): with a Redis URL (redis://[:password@]host:
    # 6379/0) replicas behind one balancer share each key's rate limits, the keys themselves (a
    # revocation reaches every replica within a second) and the engine's capacity (each admits
    # its share); a Redis that goes away degrades to per-replica limits, never an error.
    redis_url: str | None = None
    # Identical asks (index generation, question, earlier turns, filters, options; temperature
    # 0) answered from Redis without the engine, for this many seconds (needs RAG_REDIS_URL).
    answer_cache: bool = False
    answer_cache_ttl_s: int = Field(default=3600, ge=1, le=30 * 86400)

    # Admission control sized to the engine (rag/guard/admission.py): an ask reserves its prompt
    # plus max_tokens of the engine's KV cache; the rest wait in a bounded two-lane queue.
    # The engine's KV-cache tokens; unset: vLLM's /metrics (num_gpu_blocks x block_size), else
    # one window. Its max sequences at once; unset: not limited here (vLLM does not export it).
    engine_kv_tokens: int | None = Field(default=None, ge=1)
    engine_max_seqs: int | None = Field(default=None, ge=1)
    # The engine's replicas behind a router (vllm-router answers /metrics from one of them),
    # comma-separated base or /metrics URLs: capacity is their sum and /metrics shows each;
    # unset: the engine URL's /metrics.
    engine_metrics_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds to an ask's first token, waiting included (503 with Retry-After when it cannot
    # start in time), and the most a request's own timeout_s may ask for (long-context asks).
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_request_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    # Asks that may wait (more are refused at once); asks reserving at most this many tokens
    # take the short lane; a long ask that waited this long goes next.
    admission_queue_size: int = Field(default=64, ge=0)
    admission_short_tokens: int = Field(default=32768, ge=1)
    admission_aging_s: float = Field(default=10.0, gt=0)
    # Long asks together hold at most this share of the engine's KV cache (one alone may hold
    # more), so short asks always find room beside long-context ones.
    admission_long_share: float = Field(default=0.5, gt=0, le=1)

    def embed_options(self) -> EmbedOptions:
        """The embedder's settings as plain values (the embedders never see ``Settings``)."""
        return EmbedOptions(
            cache_dir=self.cache_dir,
            batch_size=self.embed_batch_size,
            device=self.embed_device,
            backend=self.embed_backend,
            threads=self.torch_threads,
            url=self.embed_url,
            api_key=self.embed_api_key,
        )

    @field_validator("ingest_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p) for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("allowed_hosts", "engine_metrics_urls", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("answer_cache")
    @classmethod
    def _cache_needs_redis(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("redis_url"):
            raise ValueError("the answer cache lives in Redis: set RAG_REDIS_URL too")
        return value

    @field_validator("engine_metrics_urls")
    @classmethod
    def _metrics_urls(cls, value: list[str]) -> list[str]:
        if any(not url.startswith(("http://", "https://")) for url in value):
            raise ValueError("each URL must start with http:// or https://")
        return value

    @field_validator("max_request_timeout_s")
    @classmethod
    def _max_timeout(cls, value: float, info: ValidationInfo) -> float:
        default = info.data.get("request_timeout_s")
        if default is not None and value < default:
            raise ValueError(f"must be at least RAG_REQUEST_TIMEOUT_S ({default:g})")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        from rag.indexes import check_index_name

        return check_index_name(value)
