"""Running a benchmarked command: wall time and the peak RSS of its whole process tree.

The RSS of the command and all its descendants (worker processes included) is summed every
SAMPLE_S seconds from the calling process; the peak of that sum and the largest single process
are kept. Pages shared between processes count once per process, so the sum is an upper bound.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SAMPLE_S = 0.05
MB = 1e6


@dataclass(frozen=True)
class Measured:
    report: dict[str, Any]  # the JSON object on the command's last line of output
    exit_code: int
    wall_s: float
    peak_rss_mb: float  # the sum over the process tree
    peak_single_mb: float


def measure(
    cmd: list[str], env: dict[str, str], cwd: Path, logs: Path, ok: tuple[int, ...] = (0,)
) -> Measured:
    """Run ``cmd`` in ``cwd`` (output kept under ``logs``); its last line of output is JSON."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout", logs / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        peak_sum = peak_one = 0
        try:
            while proc.poll() is None:
                total, largest = tree_rss(proc)
                peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
                time.sleep(SAMPLE_S)
        except BaseException:  # interrupted: leave no worker behind
            kill_tree(proc)
            raise
        wall = time.perf_counter() - started
    code = proc.returncode
    lines = out_path.read_text(errors="replace").strip().splitlines()
    if code not in ok or not lines:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd)} exited {code}:\n{tail}")
    return Measured(json.loads(lines[-1]), code, wall, peak_sum / MB, peak_one / MB)


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """The summed RSS of ``proc`` and its descendants, and the largest of them, in bytes."""
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    sizes = []
    for member in tree:
        try:
            sizes.append(int(member.memory_info().rss))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sum(sizes), max(sizes, default=0)


def kill_tree(proc: psutil.Process) -> None:
    try:
        members = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(members, timeout=10)
