"""PDFs through pdfium, scans and images through tesseract, and OCR's time in the parse pool."""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import os
import resource
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from rag.errors import DocumentError
from rag.indexes import ChunkingSpec
from rag.ingest.parse_pool import ParsePool, _Worker
from rag.ingest.parse_worker import Failed, Outcome, Task, WorkerConfig, _Heartbeat
from rag.ingest.readers import OcrOptions, ReadContext, Section, Unreadable, parse_document
from rag.ingest.readers import ocr as ocr_module

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
OCR_ON = OcrOptions(enabled=True, languages="eng", page_timeout_s=30.0)


@functools.cache
def _tesseract_missing() -> str | None:
    if shutil.which("tesseract") is None:
        return "tesseract is not installed"
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    return None if "eng" in langs.split() else "tesseract has no English (eng) traineddata"


@pytest.fixture
def tesseract() -> None:
    missing = _tesseract_missing()
    if missing is None:
        return
    message = f"{missing}: apt-get install tesseract-ocr tesseract-ocr-eng"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def scan(lines: list[str], size: tuple[int, int] = (1700, 2200)) -> Image.Image:
    """A page of typed lines as a scanner would deliver it: pixels, no text."""
    font: Any = (
        ImageFont.truetype(str(FONT), 40) if FONT.exists() else ImageFont.load_default(size=40)
    )
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((150, 200 + 70 * i), line, font=font, fill=0)
    return image


def text_pdf(
    pages: list[str], owner_password: str | None = None, user_password: str | None = None
) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    if owner_password is not None:
        pdf.set_encryption(owner_password=owner_password, user_password=user_password)
    return bytes(pdf.output())


def pdf_of(pages: list[str | Image.Image]) -> bytes:
    """A PDF whose pages are typed text (a str) or a scanned image (no text layer)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.multi_cell(0, 6, page)
        else:
            pdf.image(page, x=0, y=0, w=pdf.w)
    return bytes(pdf.output())


def image_bytes(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def words(section: Section) -> str:
    return " ".join(section.text.split())


# -- the text layer ---------------------------------------------------------------------------


def test_pdf_text_is_read_page_by_page_with_plain_line_ends() -> None:
    data = text_pdf(["Solar panels on the roof.\nThe inverter is in the cellar.", "Page two."])
    sections = parse_document(data, "pdf")
    assert [s.page for s in sections] == [1, 2]
    assert sections[0].text == "Solar panels on the roof.\nThe inverter is in the cellar."
    assert all("\r" not in s.text for s in sections)
    assert sections[1].text == "Page two."
    assert not any(s.ocr for s in sections)


def test_a_pdf_with_only_an_owner_password_is_read() -> None:
    data = text_pdf(["Board minutes, open to all readers."], owner_password="owner-only")
    assert b"/Encrypt" in data
    [section] = parse_document(data, "pdf")
    assert section.text == "Board minutes, open to all readers."


def test_a_pdf_that_needs_a_password_to_open_is_skipped_as_password_protected() -> None:
    data = text_pdf(["Secret board minutes."], owner_password="owner", user_password="secret")
    with pytest.raises(Unreadable, match=r"^password-protected PDF$"):
        parse_document(data, "pdf")


def test_a_damaged_pdf_fails_with_the_reason() -> None:
    data = text_pdf(["This PDF was cut short. " * 40])
    with pytest.raises(DocumentError, match=r"^unreadable PDF \(") as failure:
        parse_document(data[: len(data) // 3], "pdf")
    assert not isinstance(failure.value, Unreadable)  # damaged: failed, not skipped


# -- scanned pages ----------------------------------------------------------------------------


@pytest.mark.usefixtures("tesseract")
def test_a_scanned_pdf_is_ocrd_page_by_page_when_ocr_is_on() -> None:
    data = pdf_of([scan(["Quarterly solar revenue grew strongly.", "The inverter failed twice."])])
    beats: list[float] = []
    context = ReadContext(ocr=OCR_ON, heartbeat=lambda: beats.append(time.monotonic()))
    [section] = parse_document(data, "pdf", context)
    assert "Quarterly solar revenue grew strongly." in words(section)
    assert "The inverter failed twice." in words(section)
    assert (section.page, section.location, section.ocr) == (1, "", True)
    assert len(beats) == 2  # before and after the OCR'd page: the pool gives it time


def test_a_scanned_pdf_without_ocr_is_skipped_naming_the_missing_text_layer() -> None:
    data = pdf_of([scan(["Quarterly solar revenue grew strongly."])])
    with pytest.raises(Unreadable, match=r"^scanned PDF without a text layer \(OCR is off\)$"):
        parse_document(data, "pdf")
    off = OcrOptions(enabled=False, reason_off="tesseract is not installed")
    with pytest.raises(Unreadable, match=r"\(tesseract is not installed\)$"):
        parse_document(data, "pdf", ReadContext(ocr=off))


@pytest.mark.usefixtures("tesseract")
def test_only_the_pages_without_a_text_layer_are_ocrd() -> None:
    data = pdf_of(["A typed cover letter about the roof.", scan(["Handwritten invoice total."])])
    typed, scanned = parse_document(data, "pdf", ReadContext(ocr=OCR_ON))
    assert (typed.page, typed.location, typed.ocr) == (1, "", False)
    assert typed.text == "A typed cover letter about the roof."
    assert (scanned.page, scanned.location, scanned.ocr) == (2, "", True)
    assert "invoice total" in words(scanned)


def test_with_ocr_off_the_typed_pages_of_a_partly_scanned_pdf_are_read() -> None:
    data = pdf_of(["A typed cover letter about the roof.", scan(["Handwritten invoice total."])])
    context = ReadContext()
    [typed] = parse_document(data, "pdf", context)
    assert typed.page == 1
    assert context.skipped == [("page 2", "no text layer (OCR is off)")]


def test_a_blank_page_is_not_taken_for_a_scan() -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, "Typed text on the first page.")
    pdf.add_page()  # intentionally blank
    context = ReadContext()
    [section] = parse_document(bytes(pdf.output()), "pdf", context)
    assert section.page == 1
    assert context.skipped == []


@pytest.mark.usefixtures("tesseract")
def test_a_page_whose_ocr_times_out_is_left_out_with_the_reason() -> None:
    data = pdf_of(["A typed cover letter about the roof.", scan(["Handwritten invoice total."])])
    hurried = OcrOptions(enabled=True, page_timeout_s=0.001)
    beats: list[int] = []
    context = ReadContext(ocr=hurried, heartbeat=lambda: beats.append(1))
    [typed] = parse_document(data, "pdf", context)
    assert typed.page == 1
    assert context.skipped == [("page 2", "OCR timed out after 0.001 s")]
    assert beats == [1, 1]


@pytest.mark.usefixtures("tesseract")
def test_a_scan_whose_every_page_times_out_fails_saying_so() -> None:
    data = pdf_of([scan(["Handwritten invoice total."])])
    hurried = ReadContext(ocr=OcrOptions(enabled=True, page_timeout_s=0.001))
    with pytest.raises(DocumentError, match="OCR timed out"):
        parse_document(data, "pdf", hurried)


@pytest.mark.usefixtures("tesseract")
def test_a_missing_ocr_language_skips_the_file_naming_it() -> None:
    data = pdf_of([scan(["Quarterly solar revenue grew strongly."])])
    context = ReadContext(ocr=OcrOptions(enabled=True, languages="eng+xyz"))
    with pytest.raises(Unreadable, match=r"^OCR language 'xyz' is not installed$"):
        parse_document(data, "pdf", context)


def test_ocr_languages_that_are_no_language_names_are_refused() -> None:
    options = OcrOptions(enabled=True, languages="eng --user-words /etc/passwd")
    with pytest.raises(Unreadable, match="not valid"):
        ocr_module.recognise(b"\xff" * 64, 8, 8, options)


def test_a_huge_page_is_rendered_within_the_pixel_cap() -> None:
    side = 200 * 72  # a page of 200 x 200 inches, the largest PDF allows
    scale = ocr_module.scale_for(side, side)
    assert math.ceil(side * scale) ** 2 <= ocr_module.MAX_PIXELS
    assert ocr_module.scale_for(595, 842) == pytest.approx(200 / 72)  # A4 at the full 200 dpi
    narrow = ocr_module.scale_for(10, 200 * 72)  # a strip: its long side is capped
    assert 200 * 72 * narrow <= ocr_module.MAX_SIDE


@pytest.mark.usefixtures("tesseract")
def test_a_scan_on_a_huge_page_is_ocrd_at_a_lower_resolution() -> None:
    pdf = FPDF(format=(5080, 5080))  # 200 x 200 inches: 1.6 gigapixels at 200 dpi
    pdf.add_page()
    pdf.image(scan(["A small scan on a huge page."], size=(1700, 400)), x=10, y=10, w=1000)
    # Parsed in a fresh process, so that its children are this parse's tesseract alone.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        text, peak_kb = pool.apply(parse_measured, (bytes(pdf.output()),))
    assert "A small scan on a huge page." in text
    assert peak_kb < 1 << 20  # KB: tesseract under 1 GB


def parse_measured(pdf: bytes) -> tuple[str, int]:
    """A PDF's OCR'd words and the peak RSS (KB) of the tesseract this process ran."""
    [section] = parse_document(pdf, "pdf", ReadContext(ocr=OCR_ON))
    return words(section), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


# -- images -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("tesseract")
def test_a_png_is_ocrd_whole() -> None:
    data = image_bytes(scan(["Meter reading 4711 kilowatt hours."], size=(1700, 500)), "PNG")
    [section] = parse_document(data, "png", ReadContext(ocr=OCR_ON))
    assert "Meter reading 4711 kilowatt hours." in words(section)
    assert (section.page, section.location, section.ocr) == (None, "image", True)


@pytest.mark.usefixtures("tesseract")
def test_a_phone_photo_is_turned_upright_by_its_exif_orientation() -> None:
    upright = scan(["Photographed notice board."], size=(1700, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view": stored lying on its side
    data = image_bytes(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)
    [section] = parse_document(data, "jpg", ReadContext(ocr=OCR_ON))
    assert "Photographed notice board." in words(section)


@pytest.mark.usefixtures("tesseract")
def test_a_transparent_png_is_read_as_black_on_white() -> None:
    mask = scan(["Transparent labels are readable."], size=(1700, 400))
    black = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    black.putalpha(mask.point(lambda v: 255 - v))  # black text, the rest see-through
    [section] = parse_document(image_bytes(black, "PNG"), "png", ReadContext(ocr=OCR_ON))
    assert "Transparent labels are readable." in words(section)


@pytest.mark.usefixtures("tesseract")
def test_each_page_of_a_multipage_tiff_is_a_section_of_its_own() -> None:
    first = scan(["The first page of the fax."], size=(1700, 500))
    second = scan(["The second page follows here."], size=(1700, 500))
    data = image_bytes(first, "TIFF", save_all=True, append_images=[second])
    beats: list[int] = []
    context = ReadContext(ocr=OCR_ON, heartbeat=lambda: beats.append(1))
    one, two = parse_document(data, "tiff", context)
    assert "The first page of the fax." in words(one)
    assert "The second page follows here." in words(two)
    assert [(s.page, s.location, s.ocr) for s in (one, two)] == [
        (1, "", True),
        (2, "", True),
    ]
    assert beats == [1] * 4


def test_an_image_without_ocr_is_skipped_with_the_reason() -> None:
    data = image_bytes(scan(["Meter reading."], size=(400, 200)), "PNG")
    with pytest.raises(Unreadable, match=r"^image \(OCR is off\)$"):
        parse_document(data, "png")


def test_an_image_that_claims_billions_of_pixels_is_refused_before_decoding() -> None:
    data = _png_header_only(width=100_000, height=100_000)  # 10 gigapixels, a few bytes
    with pytest.raises(Unreadable, match="image too large to OCR"):
        parse_document(data, "png", ReadContext(ocr=OCR_ON))


def test_a_damaged_image_fails_with_the_reason() -> None:
    data = image_bytes(scan(["Meter reading."], size=(400, 200)), "PNG")
    with pytest.raises(DocumentError, match=r"^unreadable image") as failure:
        parse_document(data[: len(data) // 2], "png", ReadContext(ocr=OCR_ON))
    assert not isinstance(failure.value, Unreadable)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# -- OCR's time in the parse pool -------------------------------------------------------------


class _AliveProcess:
    """Stands for a busy worker process in the pool's bookkeeping (it never exits)."""

    sentinel = object()
    pid = os.getpid()

    def is_alive(self) -> bool:
        return True


def _pool_with_busy_worker(
    monkeypatch: pytest.MonkeyPatch, timeout_s: float, beat_timeout_s: float
) -> tuple[ParsePool, _Worker, Any, list[str | None]]:
    config = WorkerConfig("unused", ChunkingSpec(), max_file_bytes=1, memory_bytes=1 << 40)
    pool = ParsePool(config, workers=1, timeout_s=timeout_s, beat_timeout_s=beat_timeout_s)
    parent, child = multiprocessing.Pipe()
    worker = _Worker(_AliveProcess(), parent, task=Task(7, "scan.pdf", "pdf"))  # type: ignore[arg-type]
    worker.started = time.monotonic()
    worker.deadline = worker.started + timeout_s
    stopped: list[str | None] = []

    def replace(w: _Worker, reason: str | None) -> Outcome | None:
        stopped.append(reason)  # instead of killing and starting a real worker
        return None if reason is None else Failed(reason)

    monkeypatch.setattr(pool, "_replace", replace)
    return pool, worker, child, stopped


def test_a_heartbeat_gives_the_running_file_beat_timeout_s_from_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, worker, child, stopped = _pool_with_busy_worker(monkeypatch, 0.2, 30.0)
    child.send(("beat", 7))
    child.send(("beat", 7))
    assert pool._collect(worker, {worker.conn}) is None  # beats are no outcome
    assert worker.beats == 2
    assert worker.deadline >= time.monotonic() + 29
    time.sleep(0.3)  # past RAG_PARSE_TIMEOUT_S, within the heartbeat's time
    assert pool._collect(worker, set()) is None
    assert stopped == []
    child.send((7, Failed("done"), 0))
    assert pool._collect(worker, {worker.conn}) == Failed("done")


def test_a_file_that_stops_beating_is_stopped_at_its_extended_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, worker, child, stopped = _pool_with_busy_worker(monkeypatch, 0.1, 0.2)
    child.send(("beat", 6))  # another task's beat (the previous file's): no extension
    assert pool._collect(worker, {worker.conn}) is None
    assert worker.beats == 0
    child.send(("beat", 7))
    assert pool._collect(worker, {worker.conn}) is None
    time.sleep(0.3)
    outcome = pool._collect(worker, set())
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("parsing stopped making progress: 1 heartbeats")


def test_a_file_that_never_beats_keeps_the_parse_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    pool, worker, _child, stopped = _pool_with_busy_worker(monkeypatch, 0.1, 60.0)
    time.sleep(0.15)
    outcome = pool._collect(worker, set())
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("parsing took longer than 0.1 s (RAG_PARSE_TIMEOUT_S)")


def test_the_workers_heartbeat_names_the_running_task() -> None:
    parent, child = multiprocessing.Pipe()
    beat = _Heartbeat(child)
    beat.seq = 41
    beat()
    assert parent.recv() == ("beat", 41)
