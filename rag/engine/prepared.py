"""A folder prepared once however many processes start at once (the CPU engine's model).

Two first starts on a fresh machine (`rag-api` and `rag-engine`, or two services sharing a
cache) would both convert the model; each used to write the same ``.partial`` folder and delete
the other's. Here the preparation holds an exclusive lock (``flock`` on ``.<name>.lock`` beside
the folder), builds into a temporary folder of its own and renames it into place: whoever waits
for the lock then finds the finished folder and uses it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created 0600) for the block; blocks until free.

    ``flock`` locks an open file description, so threads that each open the file exclude each
    other as processes do; the lock goes with the process if it dies.
    """
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare_once(
    target: Path, build: Callable[[Path], None], ready: Callable[[Path], bool]
) -> Path:
    """``target``, built by ``build(folder)`` into a fresh temporary folder beside it unless
    ``ready(target)`` already holds; one process (or thread) builds, the others wait for it.

    A build that fails leaves nothing behind (the next call builds again); leftovers of builds
    killed midway are removed by the next one, under the lock.
    """
    if ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock"):
        if ready(target):  # built by the one we waited for
            return target
        stale = [target.with_name(target.name + ".partial")]  # the name used before the lock
        stale += target.parent.glob(f".{target.name}.*.partial")
        for leftover in stale:
            shutil.rmtree(leftover, ignore_errors=True)
        folder = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
        try:
            build(folder)
            if not ready(folder):
                raise RuntimeError(f"preparing {target.name} left an incomplete folder")
            shutil.rmtree(target, ignore_errors=True)  # an incomplete one, from before
            folder.rename(target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return target
