"""Images (PNG, JPEG, TIFF): OCR'd whole with tesseract; a multi-page TIFF page by page.

Pillow (HPND) decodes them rather than tesseract's own loader, for three reasons: its
decompression-bomb check refuses an image of more than ``Image.MAX_IMAGE_PIXELS`` (~89 MP)
before decoding it; transparency is flattened onto white (black text on a transparent PNG would
otherwise turn into black on black); and a phone photo is turned upright by its EXIF
orientation. Every frame reaches tesseract as grayscale of at most ocr.MAX_PIXELS, reduced
by a whole factor where larger (a JPEG is decoded at the reduced size directly).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rag.errors import DocumentError
from rag.ingest.readers import ocr
from rag.ingest.readers.base import ReadContext, Section, Unreadable

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE = 16  # a frame narrower or lower than this holds no legible text: not OCR'd


def read(data: bytes, context: ReadContext) -> list[Section]:
    reason = ocr.unavailable(context.ocr)
    if reason is not None:
        raise Unreadable(f"image ({reason})")
    sections: list[Section] = []
    timed_out = 0
    for number, frame, count in _frames(data):
        label = "image" if count == 1 else f"page {number}"
        context.heartbeat()  # before and after each frame, as for a PDF's scanned pages
        try:
            pixels = frame.tobytes()
            text = ocr.recognise(pixels, frame.width, frame.height, context.ocr, _dpi(frame))
        except ocr.OcrTimeout as exc:
            context.skipped.append((label, str(exc)))
            timed_out += 1
            continue
        finally:
            context.heartbeat()
        page = None if count == 1 else number
        # The page (or "image") and the OCR mark are what a citation shows: see locations.py.
        location = "image" if page is None else ""
        sections.append(Section(text=text, page=page, location=location, ocr=True))
    if timed_out and not any(s.text.strip() for s in sections):
        seconds = f"{context.ocr.page_timeout_s:g}"
        raise DocumentError(f"OCR timed out (after {seconds} s a page) on every page of the image")
    return sections


def _frames(data: bytes) -> Iterator[tuple[int, Image.Image, int]]:
    """(frame number from 1, the frame in grayscale ready for OCR, frames in all)."""
    from PIL import Image, ImageSequence

    try:
        with warnings.catch_warnings():
            # Over MAX_IMAGE_PIXELS Pillow only warns (an error past twice that): refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            multi = image.format == "TIFF"  # a PNG's or JPEG's extra frames are no pages
            count = getattr(image, "n_frames", 1) if multi else 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Unreadable(f"image too large to OCR ({exc})") from exc
    except Exception as exc:  # Pillow raises assorted types on damaged files
        raise DocumentError(f"unreadable image ({type(exc).__name__}: {exc})") from exc
    with image:
        frames = ImageSequence.Iterator(image) if multi else iter([image])
        for number in range(1, count + 1):
            try:
                frame = _prepared(next(frames))
            except (StopIteration, EOFError):
                return
            except DocumentError:
                raise
            except Exception as exc:
                where = "" if count == 1 else f"page {number}: "
                detail = f"{where}{type(exc).__name__}: {exc}"
                raise DocumentError(f"unreadable image ({detail})") from exc
            if min(frame.size) >= MIN_SIDE:
                yield number, frame, count


def _prepared(frame: Image.Image) -> Image.Image:
    """One frame decoded in grayscale on white, upright, within ocr's pixel limits."""
    from PIL import Image, ImageOps

    width, height = frame.size
    if width * height > (Image.MAX_IMAGE_PIXELS or math.inf):
        raise Unreadable(f"image too large to OCR ({width} x {height} pixels)")
    factor = _reduction(width, height)
    if factor > 1 and frame.format == "JPEG":
        frame.draft("L", (width // factor, height // factor))  # decoded smaller: DCT scaling
    frame.load()
    if frame.mode in ("RGBA", "LA", "PA", "La") or "transparency" in frame.info:
        rgba = frame.convert("RGBA")
        frame = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    gray = ImageOps.exif_transpose(frame).convert("L")
    factor = _reduction(*gray.size)
    if factor > 1:
        dpi = gray.info.get("dpi")
        gray = gray.reduce(factor)
        if dpi:
            gray.info["dpi"] = (dpi[0] / factor, dpi[1] / factor)
    return gray


def _reduction(width: int, height: int) -> int:
    """The smallest whole factor that brings an image within ocr.MAX_PIXELS and MAX_SIDE."""
    by_area = math.sqrt(width * height / ocr.MAX_PIXELS)
    return max(1, math.ceil(max(by_area, width / ocr.MAX_SIDE, height / ocr.MAX_SIDE)))


def _dpi(frame: Image.Image) -> float | None:
    dpi = frame.info.get("dpi")
    try:
        return float(dpi[0]) if dpi else None
    except (TypeError, ValueError, IndexError):
        return None
