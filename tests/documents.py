"""Documents the tests write themselves: PDFs with a PDF library, Markdown, HTML, bad files."""

from __future__ import annotations

import io
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter


def write_pdf(path: Path, pages: list[str]) -> Path:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, text: str, password: str = "s3cret") -> Path:
    plain = io.BytesIO()
    write_pdf(path, [text])
    writer = PdfWriter(clone_from=PdfReader(path))
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-128")
    writer.write(plain)
    path.write_bytes(plain.getvalue())
    return path


def write_truncated_pdf(path: Path, text: str) -> Path:
    write_pdf(path, [text])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


MARKDOWN = """# Handbook

The handbook explains how the team works.

## Travel

Book trains for trips under four hours. The travel budget is reviewed each quarter.

### Expenses

Submit receipts within thirty days of the trip.

## Security

Laptops use full-disk encryption. Report lost devices to the security desk at once.
"""

HTML = """<!doctype html><html><head><title>Status</title><style>body{color:red}</style>
<script>var hidden = "script text must not be indexed";</script></head>
<body><nav>Home</nav><h1>Service status</h1>
<p>The ingestion service processed every queued folder overnight.</p>
<noscript>enable javascript</noscript></body></html>
"""

PAGE_ONE = (
    "Quarterly report of Example Corp. Revenue grew in every segment during the quarter. "
    "The company opened two new offices and hired forty engineers."
)
PAGE_TWO = (
    "Risk factors. The zeppelin fleet expansion depends on helium supply contracts. "
    "Management believes the helium reserves cover eighteen months of operations."
)


def write_corpus(folder: Path) -> dict[str, Path]:
    """A small mixed folder: two PDFs, Markdown, HTML, text, and a file that is no document."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report": write_pdf(folder / "reports" / "example-q1.pdf", [PAGE_ONE, PAGE_TWO]),
        "memo": write_pdf(folder / "reports" / "memo.pdf", ["A short memo about parking spaces."]),
        "handbook": folder / "handbook.md",
        "status": folder / "status.html",
        "notes": folder / "notes.txt",
    }
    files["handbook"].write_text(MARKDOWN, encoding="utf-8")
    files["status"].write_text(HTML, encoding="utf-8")
    files["notes"].write_text("Plain notes: the coffee machine is on floor three.\n", "utf-8")
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00" + b"\x00" * 60)  # no document type
    return files
