"""Legacy Word (.doc, Word 97-2003 and older): the text antiword prints.

antiword is GPL, so it runs as a separate program, never in this process: the document is
written to a private temporary folder, antiword runs with a time limit, and at most
``MAX_OUTPUT_BYTES`` of what it prints are read. ``-w 0`` prints each paragraph on one line;
``-m UTF-8.txt`` prints UTF-8 whatever the locale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, Unreadable

ANTIWORD_TIMEOUT_S = 30.0
MAX_OUTPUT_BYTES = 50 * 1_000_000
_NOT_SUPPORTED = ("is not supported", "are not supported")  # old versions, fast-saved files


def read_doc(data: bytes, context: ReadContext) -> list[Section]:
    antiword = shutil.which("antiword")
    if antiword is None:
        raise Unreadable("legacy .doc (antiword is not installed)")
    with tempfile.TemporaryDirectory(prefix="rag-doc-") as folder:
        document = Path(folder) / "document.doc"
        fd = os.open(document, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        output, complaint, returncode = _run(antiword, document, Path(folder))
    if returncode == 0 and output.strip():
        return [Section(text=output.decode("utf-8", errors="replace").strip("\n"))]
    first = next((line.strip() for line in complaint.splitlines() if line.strip()), "")
    reason = first.replace(str(document), "the file") or (
        f"antiword crashed (signal {-returncode})"
        if returncode < 0
        else f"antiword exit status {returncode}"
    )
    if "encrypted" in reason.lower():  # "Encrypted documents are not supported"
        raise Unreadable("password-protected Office document")
    if any(phrase in reason for phrase in _NOT_SUPPORTED):
        raise Unreadable(f"legacy .doc not readable by antiword ({reason})")
    if returncode == 0:
        return []  # a document without text: the registry reports "no extractable text"
    raise DocumentError(f"unreadable .doc ({reason})")


def _run(antiword: str, document: Path, folder: Path) -> tuple[bytes, str, int]:
    """(stdout, stderr, exit status) of antiword on ``document``, stdout read up to its cap
    while a timer kills antiword when it runs past its time."""
    # antiword looks for its mapping files under $HOME/.antiword, then /usr/share/antiword.
    environment = {"HOME": str(folder), "LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", "")}
    errors = folder / "stderr.txt"
    expired = threading.Event()
    with (
        errors.open("wb") as stderr,
        subprocess.Popen(
            [antiword, "-w", "0", "-m", "UTF-8.txt", str(document)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environment,
            cwd=folder,
        ) as process,
    ):

        def expire() -> None:
            expired.set()
            process.kill()

        timer = threading.Timer(ANTIWORD_TIMEOUT_S, expire)
        timer.start()
        try:
            output = process.stdout.read(MAX_OUTPUT_BYTES + 1) if process.stdout else b""
            if len(output) > MAX_OUTPUT_BYTES:
                process.kill()
            returncode = process.wait()
        finally:
            timer.cancel()
    if expired.is_set():
        raise DocumentError(f"unreadable .doc (antiword took over {ANTIWORD_TIMEOUT_S:.0f} s)")
    if len(output) > MAX_OUTPUT_BYTES:
        raise DocumentError(f"unreadable .doc (antiword printed over {MAX_OUTPUT_BYTES:,} bytes)")
    return output, errors.read_text("utf-8", errors="replace")[:10_000], returncode
