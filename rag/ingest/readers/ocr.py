"""OCR with tesseract, run as a subprocess: a grayscale image in, its text out.

Tesseract is Apache-licensed but runs as a separate program all the same: it gets a deadline
(``RAG_OCR_PAGE_TIMEOUT_S``) per page, dies with the parse worker if the pool kills it, and
runs on one thread (``OMP_THREAD_LIMIT=1``: the worker stands for one core, and tesseract's
OpenMP threads only fight the other workers for theirs). Images reach it as PGM on stdin, so
nothing is written to disk and no encoder runs; every image is first scaled or refused to at
most ``MAX_PIXELS``, which bounds tesseract's memory, time and output alike.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import signal
import subprocess

from rag.errors import DocumentError
from rag.ingest.readers.base import OcrOptions, Unreadable

RENDER_DPI = 200  # office scans read well at 200 dpi; ~0.5 CPU-s a page (300 dpi costs ~2x)
MAX_PIXELS = 40_000_000  # a 200-dpi page of 31 x 31 inches; 40 MB of grayscale
MAX_SIDE = 32_000  # tesseract refuses images wider or taller than 32767 pixels
MAX_TEXT_CHARS = 2_000_000  # far above what MAX_PIXELS of text can hold: a guard, not a limit
PR_SET_PDEATHSIG = 1
_LANGUAGES = re.compile(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*")
_MISSING_LANGUAGE = re.compile(r"Failed loading language '([^']*)'")


class OcrTimeout(Exception):
    """Tesseract did not finish one image within the page timeout (it was killed)."""


def unavailable(options: OcrOptions) -> str | None:
    """Why OCR cannot run (``reason_off``, or tesseract missing), or None when it can."""
    if not options.enabled:
        return options.reason_off
    if shutil.which("tesseract") is None:
        return "tesseract is not installed"
    return None


def scale_for(width: float, height: float, dpi: float = RENDER_DPI) -> float:
    """Pixels per unit for an image of ``width`` x ``height`` units (PDF points: 1/72 inch)
    rendered at ``dpi``, lowered so that it stays within MAX_PIXELS and MAX_SIDE."""
    scale = dpi / 72
    if width <= 0 or height <= 0:
        return scale
    scale = min(
        scale, math.sqrt(MAX_PIXELS / (width * height)), MAX_SIDE / width, MAX_SIDE / height
    )
    while math.ceil(width * scale) * math.ceil(height * scale) > MAX_PIXELS:
        scale *= 0.999  # pdfium rounds the bitmap's sides up
    return scale


def recognise(
    pixels: bytes, width: int, height: int, options: OcrOptions, dpi: float | None = None
) -> str:
    """The text tesseract reads in a grayscale image (``width`` x ``height``, one byte a pixel,
    rows top to bottom). Raises OcrTimeout past the page timeout, Unreadable for a missing
    language, DocumentError when tesseract fails otherwise."""
    if not _LANGUAGES.fullmatch(options.languages):
        raise Unreadable(f"OCR languages {options.languages!r} are not valid (e.g. 'eng+deu')")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise Unreadable(f"image too large to OCR ({width} x {height} pixels)")
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        raise Unreadable("OCR is on but tesseract is not installed")
    command = [tesseract, "stdin", "stdout", "-l", options.languages, "--psm", "3"]
    if dpi is not None and 70 <= dpi <= 2400:
        command += ["--dpi", str(round(dpi))]
    image = b"P5\n%d %d\n255\n" % (width, height) + pixels
    try:
        done = subprocess.run(
            command,
            input=image,
            capture_output=True,
            timeout=options.page_timeout_s,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            preexec_fn=_die_with_parent,  # safe: the worker forks from its only busy thread
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OcrTimeout(f"OCR timed out after {options.page_timeout_s:g} s") from None
    except OSError as exc:
        raise DocumentError(f"OCR could not run tesseract ({exc})") from exc
    errors = done.stderr[:4000].decode("utf-8", "replace")
    if missing := _MISSING_LANGUAGE.search(errors):
        raise Unreadable(f"OCR language '{missing.group(1)}' is not installed")
    if done.returncode != 0:
        last = errors.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise DocumentError(f"OCR failed (tesseract: {last[0]})")
    return normalise(done.stdout[: MAX_TEXT_CHARS * 4].decode("utf-8", "replace"))


def normalise(text: str) -> str:
    """Tesseract's text with "\\n" line ends and no page break (form feed) at the end."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    return text.strip()[:MAX_TEXT_CHARS]


def _die_with_parent() -> None:
    """In the tesseract child, before exec: be killed with the worker that started it (the pool
    kills a worker past its deadline with SIGKILL, which would otherwise orphan tesseract)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc: tesseract is then not tied to the worker's life
        return None


_LIBC = _libc()
