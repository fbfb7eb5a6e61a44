"""The CPU engine's model is prepared once, however many first starts happen at once: one holds
the lock and converts into a folder of its own, renamed into place; the others wait and use it.

The conversion itself (torch, transformers, minutes of CPU) is played by a stand-in interpreter
that takes a second and writes what the real one writes last, `config.json`; every other
step is the real one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag.engine import CPU_MODEL_NAME
from rag.engine.prepared import prepare_once


def stand_in_python(tmp_path: Path) -> tuple[Path, Path]:
    """An "interpreter" that converts slowly: it logs each run, then fills OUT_DIR."""
    runs = tmp_path / "conversions.log"
    python = tmp_path / "engine-python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$$" >> "{runs}"\n'
        "sleep 1\n"
        'echo weights > "$2/model.safetensors"\n'
        'echo "{}" > "$2/config.json"\n',
        encoding="utf-8",
    )
    python.chmod(0o755)
    return python, runs


def test_two_first_starts_at_once_convert_the_model_once(tmp_path: Path) -> None:
    """Two processes (rag-api and rag-engine, say) prepare over one fresh cache dir at once."""
    python, runs = stand_in_python(tmp_path)
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from rag.config import Settings; "
        "from rag.engine import prepare_cpu_model; "
        "print(prepare_cpu_model(Settings(cache_dir=Path(sys.argv[1])), sys.argv[2]))"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache), str(python)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [start.communicate(timeout=120) for start in starts]
    target = cache / "models" / CPU_MODEL_NAME
    for start, (out, err) in zip(starts, results, strict=True):
        assert start.returncode == 0, err
        assert out.strip() == str(target)
    assert len(runs.read_text().split()) == 1
    assert (target / "config.json").is_file()
    assert (target / "model.safetensors").read_text() == "weights\n"
    assert not list((cache / "models").glob("*.partial"))
    assert not list((cache / "models").glob(".*.partial"))


def test_threads_wait_for_the_one_preparing_and_use_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    built: list[str] = []

    def build(folder: Path) -> None:
        built.append(threading.current_thread().name)
        time.sleep(0.5)
        (folder / "config.json").write_text("{}")

    def ready(folder: Path) -> bool:
        return (folder / "config.json").is_file()

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(prepare_once(target, build, ready)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [target] * 4
    assert len(built) == 1


def test_a_failed_preparation_leaves_nothing_and_the_next_one_builds(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    target.parent.mkdir(parents=True)
    (tmp_path / "models" / "m.partial").mkdir()  # the shared folder of earlier versions
    (tmp_path / "models" / ".m.abc123.partial").mkdir()  # a build killed midway

    def ready(folder: Path) -> bool:
        return (folder / "config.json").is_file()

    def broken(folder: Path) -> None:
        (folder / "half.bin").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        prepare_once(target, broken, ready)
    assert sorted(p.name for p in target.parent.iterdir()) == [".m.lock"]
    with pytest.raises(RuntimeError, match="incomplete"):
        prepare_once(target, lambda folder: None, ready)  # "succeeds" without the model
    assert not target.exists()
    prepare_once(target, lambda folder: (folder / "config.json").write_text("{}"), ready)
    assert ready(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [".m.lock", "m"]
