"""The Docker stack, checked without a Docker engine: what compose and the image promise."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def command_of(service: dict[str, Any]) -> list[str]:
    return [str(part) for part in service["command"]]


def env_default(value: str) -> str:
    """`${NAME:-default}` -> default."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def test_every_service_the_api_needs_is_defined_with_a_healthcheck(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"qdrant", "vllm", "api", "ingest"} <= set(services)
    for name in ("qdrant", "vllm", "api"):
        check = services[name]["healthcheck"]
        assert check["test"]
        assert check["interval"]
    assert services["api"]["depends_on"] == {
        "qdrant": {"condition": "service_healthy"},
        "vllm": {"condition": "service_healthy"},
    }


def test_images_are_pinned_to_versions(compose: dict[str, Any]) -> None:
    assert PINNED.match(compose["services"]["qdrant"]["image"])
    assert compose["services"]["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert PINNED.match(compose["services"]["vllm"]["image"])
    assert compose["services"]["vllm"]["image"].startswith("vllm/vllm-openai:")


def test_vllm_serves_qwen_with_prefix_caching_chunked_prefill_and_a_256k_window(
    compose: dict[str, Any],
) -> None:
    vllm = compose["services"]["vllm"]
    args = command_of(vllm)
    assert "--enable-prefix-caching" in args
    assert "--enable-chunked-prefill" in args
    assert env_default(args[args.index("--model") + 1]) == "Qwen/Qwen3-4B-Instruct-2507"
    assert env_default(args[args.index("--max-model-len") + 1]) == "262144"
    assert float(env_default(args[args.index("--gpu-memory-utilization") + 1])) <= 0.95
    # Long prefills leave part of every step to short asks (chunks of at most half a step).
    threshold = int(env_default(args[args.index("--long-prefill-token-threshold") + 1]))
    assert 0 < threshold <= 4096
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "HF_TOKEN" in vllm["environment"]
    assert any(v.endswith(":/root/.cache/huggingface") for v in vllm["volumes"])
    start_period = int(vllm["healthcheck"]["start_period"].rstrip("s"))
    assert start_period >= 600, "the first start downloads the model"
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def test_api_urls_name_the_right_services_and_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["api"]["environment"]
    vllm_args = command_of(services["vllm"])
    assert env["RAG_LLM_URL"] == f"http://vllm:{vllm_args[vllm_args.index('--port') + 1]}"
    qdrant_port = services["qdrant"]["ports"][0].rsplit(":", 1)[1]
    assert env["RAG_QDRANT_URL"] == f"http://qdrant:{qdrant_port}"
    assert services["ingest"]["environment"]["RAG_QDRANT_URL"] == env["RAG_QDRANT_URL"]


def test_ingest_runs_as_a_tool_over_a_read_only_documents_folder(
    compose: dict[str, Any],
) -> None:
    ingest = compose["services"]["ingest"]
    assert ingest["profiles"] == ["tools"]
    assert ingest["image"] == compose["services"]["api"]["image"]
    assert ingest["entrypoint"] == ["rag-ingest"]
    assert any(v.endswith(":/docs:ro") for v in ingest["volumes"])


def test_every_setting_compose_reads_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+):-", (ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)=", example, re.MULTILINE))
    assert used
    assert used <= documented


def test_dockerfile_is_multi_stage_slim_non_root_and_copies_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2
    assert all(stage.startswith("python:3.11-slim") for stage in stages)
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root)\w+", final, re.MULTILINE)
    # No build tool chain in the final image; its only packages are the readers' programs
    # (tesseract, antiword), without recommends and without the package lists.
    assert not re.search(r"gcc|g\+\+|build-essential|-dev\b", final)
    for install in re.findall(r"apt-get install[^&]*", final):
        assert "--no-install-recommends" in install
        assert set(install.split()) & {"tesseract-ocr", "antiword"}
    if "apt-get install" in final:
        assert "rm -rf /var/lib/apt/lists/*" in final
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in packages["packages"]["find"]["include"]:
        name = package.rstrip("*")
        assert f"COPY {name} ./{name}" in text
    assert "COPY indexes" in final
    assert "HEALTHCHECK" in final


def test_docker_compose_config_accepts_the_file_where_the_client_supports_it() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("this docker client has no compose plugin")
    done = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
