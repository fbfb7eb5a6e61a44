"""A team's shared drive in every format we read, generated in a folder, with its facts.

Each ``Fact`` names the file it is in, a question a colleague would ask, text the passage that
answers must hold, and where a citation must say it is (the member of an archive or mail, the
slide, the sheet and rows, OCR). Documents are written with the libraries their formats are
made with, so no binary fixture is kept; the protected and unsupported files are the shapes of
the real ones (an OLE container, an encrypted PDF).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from tests.documents import write_encrypted_pdf, write_pdf

OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class Fact:
    file: str
    question: str
    text: str  # what the citing passage holds
    source: str = ""  # what the citation's source ends with (default: ``file``)
    location: str = ""  # what the citation's location holds
    ocr: bool = False


FACTS = [
    Fact("handbook.docx", "Which class do employees book for short flights?", "economy class"),
    Fact(
        "handbook.docx",
        "What is the 2024 travel budget of the Nordics region?",
        "318,500",
        location="table 1",
    ),
    Fact("handbook.docx", "What is the per-diem allowance in Oslo?", "95 euros"),
    Fact("deck.pptx", "When does the Heron project launch?", "Heron project launches in March"),
    Fact(
        "deck.pptx",
        "How large is the Heron budget the board should be reminded of?",
        "2.4 million",
        location="speaker notes of slide 2",
    ),
    Fact(
        "budget.xlsx",
        "How much do the Wombat servers cost?",
        "12,400",
        location="sheet Costs, rows",
    ),
    Fact("budget.xlsx", "What is the total headcount of the staff?", "57", location="sheet Staff"),
    Fact("vendors.csv", "Where is the vendor Glimmerworks based?", "Tallinn"),
    Fact("mail-offsite.eml", "Where will the offsite be held?", "Larchwood Lodge"),
    Fact(
        "mail-invoice.eml",
        "When is invoice 7731 due?",
        "30 June",
        source="mail-invoice.eml/invoice-7731.pdf",
    ),
    Fact("lighthouse.epub", "What is the lighthouse keeper's name?", "Ambrose Penhallow"),
    Fact("payments.json", "Which team owns the payments service?", "team-marmot"),
    Fact("churn.ipynb", "What churn rate did the analysis find?", "4.2%"),
    Fact("minutes.odt", "What purchase did the committee approve?", "solar canopy"),
    Fact("generator.rtf", "How often is the backup generator tested?", "every Thursday"),
    Fact(
        "onboarding.zip",
        "What do new hires receive on their first day?",
        "brass key",
        source="onboarding.zip/notes/welcome.md",
    ),
    Fact(
        "vault-scan.pdf",
        "What is the code of the vault in the scanned memo?",
        "4417",
        ocr=True,
    ),
    Fact("whiteboard.png", "What is the sprint goal on the whiteboard?", "billing", ocr=True),
    Fact("statement.pdf", "What was the operating loss of the Hardware segment?", "(1,644)"),
    Fact("rota.tsv", "Who is on call in week 12?", "Priyanka"),
    Fact("deploy.yaml", "How many replicas does the ledger deployment run?", "replicas: 7"),
]

# Skipped, each with the reason a user should read; none of them fails the run.
SKIPPED = {
    "locked.pdf": "password-protected PDF",
    "locked.docx": "password-protected Office document",
    "old-sheet.xls": ".xls/.ppt binary formats are not supported",
    "mail.msg": "Outlook .msg is not supported",
}


def write_drive(root: Path) -> Path:
    """Every file of ``FACTS`` and ``SKIPPED`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    _docx(root / "handbook.docx")
    _pptx(root / "deck.pptx")
    _xlsx(root / "budget.xlsx")
    vendors = "vendor;city;contract end\nGlimmerworks;Tallinn;2027-03-31\nOakbeam;Porto;2026-01-15"
    (root / "vendors.csv").write_bytes(b"\xef\xbb\xbf" + vendors.encode() + b"\n")
    (root / "rota.tsv").write_text("week\ton call\n11\tMarcus\n12\tPriyanka\n", "utf-8")
    _mail(
        root / "mail-offsite.eml",
        "Offsite venue",
        "The offsite will be held at the Larchwood Lodge on 14 May. Bring walking shoes.",
    )
    invoice = write_pdf(root.parent / "invoice-7731.pdf", ["Invoice 7731 is due on 30 June."])
    _mail(
        root / "mail-invoice.eml",
        "Invoice attached",
        "Please find the invoice attached.",
        attachment=("invoice-7731.pdf", invoice.read_bytes()),
    )
    _epub(root / "lighthouse.epub")
    (root / "payments.json").write_text(
        json.dumps({"service": "payments", "owner": "team-marmot", "timeout_seconds": 45}), "utf-8"
    )
    _notebook(root / "churn.ipynb")
    _odt(
        root / "minutes.odt",
        "The committee approved the purchase of a solar canopy for the car park.",
    )
    (root / "generator.rtf").write_text(
        r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\pard "
        r"Facilities notes.\par The backup generator is tested every Thursday at noon.\par}",
        "ascii",
    )
    with zipfile.ZipFile(root / "onboarding.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "notes/welcome.md",
            "# Onboarding\n\nNew hires receive a brass key on their first day.\n",
        )
        archive.writestr("notes/it.md", "# IT\n\nLaptops are collected from the third floor.\n")
    _scanned_pdf(root / "vault-scan.pdf", ["Memo: the vault code is 4417.", "Do not share it."])
    _image(root / "whiteboard.png", ["Sprint goal:", "migrate billing"])
    write_pdf(root / "statement.pdf", [_statement()])
    (root / "deploy.yaml").write_text(
        "deployment: ledger\nspec:\n  replicas: 7\n  image: ledger:2.3\n", "utf-8"
    )
    write_encrypted_pdf(root / "locked.pdf", "Secret board minutes.")
    (root / "locked.docx").write_bytes(_ole_with("EncryptionInfo", "EncryptedPackage"))
    (root / "old-sheet.xls").write_bytes(_ole_with("Workbook"))
    (root / "mail.msg").write_bytes(_ole_with("__substg1.0_0037001F"))
    return root


def statement_rows() -> list[str]:
    """A financial statement's rows, long enough that its PDF page is cut into several chunks."""
    rows = ["Segment results (in millions) Q3 2023 Q3 2022"]
    for k in range(1, 61):
        rows.append(f"Region {k} operating income {k * 37:,}.{k % 10} ({k * 1013:,}) {k * 211:,}")
    rows.insert(30, "Hardware operating income (loss) 12.5 (1,644) (1,102)")
    return rows


def _statement() -> str:
    return "\n".join(statement_rows())


def _docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Quillfeather staff handbook"
    document.add_heading("Travel policy", level=1)
    document.add_paragraph(
        "Employees book economy class for flights under six hours. The per-diem is listed in "
        "the footnote."
    )
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(
        table.rows,
        [("Region", "2024 travel budget"), ("Nordics", "318,500"), ("Benelux", "207,000")],
        strict=True,
    ):
        for cell, value in zip(row.cells, cells, strict=True):
            cell.text = value
    document.add_heading("Expenses", level=1)
    document.add_paragraph("Receipts are kept for seven years.")
    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(
        _with_footnote(buffer.getvalue(), "The per-diem allowance in Oslo is 95 euros.")
    )


def _with_footnote(docx_bytes: bytes, note: str) -> bytes:
    """The document with one footnote (python-docx writes none): its part, relation, type and
    a reference at the end of the first paragraph after the first heading."""
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    notes = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:footnotes {w}>'
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        f'<w:footnote w:id="1"><w:p><w:r><w:t>{note}</w:t></w:r></w:p></w:footnote></w:footnotes>'
    )
    source = zipfile.ZipFile(io.BytesIO(docx_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "[Content_Types].xml":
                data = data.replace(
                    b"</Types>",
                    b'<Override PartName="/word/footnotes.xml" '
                    b'ContentType="application/vnd.openxmlformats-officedocument.'
                    b'wordprocessingml.footnotes+xml"/></Types>',
                )
            elif item.filename == "word/_rels/document.xml.rels":
                data = data.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rIdFn1" Type="http://'
                    b"schemas.openxmlformats.org/officeDocument/2006/relationships/"
                    b'footnotes" Target="footnotes.xml"/></Relationships>',
                )
            elif item.filename == "word/document.xml":
                ref = b'<w:r><w:footnoteReference w:id="1"/></w:r></w:p>'
                data = data.replace(b"</w:p>", ref, 2).replace(ref, b"</w:p>", 1)
            target.writestr(item, data)
        target.writestr("word/footnotes.xml", notes)
    return out.getvalue()


def _pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[0])
    first.shapes.title.text = "Company update"
    first.placeholders[1].text = "Autumn all-hands"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "Quarterly roadmap"
    second.placeholders[1].text = "The Heron project launches in March."
    table = second.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(6), Inches(1)).table
    for (r, c), value in {
        (0, 0): "Project",
        (0, 1): "Office",
        (1, 0): "Kestrel",
        (1, 1): "Berlin",
    }.items():
        table.cell(r, c).text = value
    second.notes_slide.notes_text_frame.text = (
        "Remind the board that the Heron budget is 2.4 million euros."
    )
    deck.save(str(path))


def _xlsx(path: Path) -> None:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path))
    thousands = book.add_format({"num_format": "#,##0"})
    costs = book.add_worksheet("Costs")
    costs.write_row(0, 0, ["Item", "Cost (EUR)"])
    for i, (item, cost) in enumerate([("Wombat servers", 12400), ("Desk chairs", 3150)], 1):
        costs.write(i, 0, item)
        costs.write_number(i, 1, cost, thousands)
    staff = book.add_worksheet("Staff")
    staff.write_row(0, 0, ["Team", "Headcount"])
    staff.write_row(1, 0, ["Engineering", 41])
    staff.write_row(2, 0, ["Sales", 16])
    staff.write(3, 0, "Total headcount")
    staff.write_formula(3, 1, "=SUM(B2:B3)", None, 57)
    book.close()


def _mail(path: Path, subject: str, body: str, attachment: tuple[str, bytes] | None = None) -> None:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Dana Ortiz <dana@example.com>"
    message["To"] = "team@example.com"
    message["Date"] = "Tue, 02 Dec 2025 09:30:00 +0100"
    message.set_content(body)
    if attachment is not None:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    path.write_bytes(bytes(message))


def _epub(path: Path) -> None:
    chapter = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>The keeper</title></head><body><h1>The keeper</h1>"
        "<p>The lighthouse keeper's name is Ambrose Penhallow; he came in 1887.</p></body></html>"
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:title>Coast stories</dc:title><dc:identifier id="id">coast-1</dc:identifier>'
        '</metadata><manifest><item id="c1" href="keeper.xhtml" '
        'media-type="application/xhtml+xml"/></manifest><spine><itemref idref="c1"/></spine>'
        "</package>"
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:'
        'xmlns:container"><rootfiles><rootfile full-path="OEBPS/book.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr("META-INF/container.xml", container)
        book.writestr("OEBPS/book.opf", opf)
        book.writestr("OEBPS/keeper.xhtml", chapter)


def _notebook(path: Path) -> None:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Churn analysis\n", "Monthly."]},
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 1,
            "source": ["churn_rate = lost / customers\n", "print(f'Churn rate: {churn_rate:.1%}')"],
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["Churn rate: 4.2%\n"]}
            ],
        },
    ]
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook), "utf-8")


def _odt(path: Path, text: str) -> None:
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} office:version="1.3">'
        '<office:body><office:text><text:h text:outline-level="1">Committee minutes</text:h>'
        f"<text:p>{text}</text:p></office:text></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:'
        'names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3"><manifest:file-entry '
        'manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as odt:
        odt.writestr(
            "mimetype", "application/vnd.oasis.opendocument.text", compress_type=zipfile.ZIP_STORED
        )
        odt.writestr("content.xml", content)
        odt.writestr("META-INF/manifest.xml", manifest)


def text_image(lines: list[str]) -> object:
    """Black text on white at office-scan quality (Pillow's own font: no system fonts)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=44)
    image = Image.new("L", (1400, 140 + 90 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((80, 70 + 90 * i), line, fill=0, font=font)
    return image


def _image(path: Path, lines: list[str]) -> None:
    text_image(lines).save(path)  # type: ignore[attr-defined]


def _scanned_pdf(path: Path, lines: list[str]) -> None:
    """A PDF whose page is only a picture of its text, as a scanner makes it."""
    from fpdf import FPDF

    picture = io.BytesIO()
    text_image(lines).save(picture, format="PNG")  # type: ignore[attr-defined]
    pdf = FPDF(unit="pt", format=(1400 * 0.36, (140 + 90 * len(lines)) * 0.36))
    pdf.add_page()
    pdf.image(picture, x=0, y=0, w=pdf.w, h=pdf.h)
    pdf.output(str(path))


def _ole_with(*streams: str) -> bytes:
    """The start of an OLE compound file naming ``streams`` in its directory, as Office's
    encrypted packages, legacy workbooks and Outlook messages do."""
    directory = b"".join(s.encode("utf-16-le") + b"\x00\x00" for s in ("Root Entry", *streams))
    return OLE + b"\x00" * 504 + directory.ljust(2048, b"\x00")


def tools_present() -> bool:
    return shutil.which("tesseract") is not None
