"""Hostile files of the formats a company drive holds: bombs, entities, corrupt packages.

Each entry says what must become of it: ingested (a sentence must be searchable), skipped or
failed with a reason holding a phrase. Built small on disk (zip bombs compress to kilobytes).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

SECRET = "the-root-password-is-hunter2"
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


@dataclass
class OfficeFolder:
    root: Path
    good: dict[str, str] = field(default_factory=dict)  # name -> a sentence it holds
    skipped: dict[str, str] = field(default_factory=dict)  # name -> part of its reason
    failed: dict[str, str] = field(default_factory=dict)  # name -> part of its reason
    either: set[str] = field(default_factory=set)  # bounded by time or memory, whichever first


def _docx_with_body(body: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph("placeholder")
    buffer = io.BytesIO()
    document.save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                data = body.encode()
            target.writestr(item, data)
    return out.getvalue()


def _document_xml(paragraph: str, doctype: str = "") -> str:
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    return (
        f"{doctype}<w:document {w}><w:body><w:p><w:r><w:t>{paragraph}</w:t></w:r></w:p>"
        "</w:body></w:document>"
    )


def _zip_bomb(path: Path, megabytes: int) -> None:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.txt", "w", force_zip64=True) as member,
    ):
        block = b"0" * (1 << 20)
        for _ in range(megabytes):
            member.write(block)


def _encrypted_zip(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("secret.md", "# Secret\n\nThe vault opens at dawn.\n")
    data = bytearray(buffer.getvalue())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        data[start + flag_at] |= 0x01  # the "encrypted" bit, as PKWARE encryption sets it
    path.write_bytes(bytes(data))


def _nested_zip(depth: int) -> bytes:
    data = b"# Deep\n\nThe deepest note.\n"
    name = "deep.md"
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(name, data)
            archive.writestr(f"level-{level}.md", f"# Level {level}\n\nNote of level {level}.\n")
        data, name = buffer.getvalue(), f"inner-{level}.zip"
    return data


def _huge_sheet(path: Path, rows: int) -> None:
    """A workbook of ``rows`` rows, written straight into its zip (xlsxwriter is too slow for a
    million): what a database export to Excel looks like."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats'
            '-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
            'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml'
            '.worksheet+xml"/></Types>',
        )
        book.writestr(
            "_rels/.rels",
            f'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package'
            f'/2006/relationships"><Relationship Id="r1" Type="{rel}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>',
        )
        book.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0"?><workbook {ns} xmlns:r="{rel}"><sheets><sheet name="Export" '
            'sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        book.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package'
            f'/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" '
            'Target="worksheets/sheet1.xml"/></Relationships>',
        )
        with book.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(f'<?xml version="1.0"?><worksheet {ns}><sheetData>'.encode())
            for start in range(1, rows + 1, 10_000):
                sheet.write(
                    "".join(
                        f'<row r="{r}"><c r="A{r}"><v>{r}</v></c></row>'
                        for r in range(start, min(start + 10_000, rows + 1))
                    ).encode()
                )
            sheet.write(b"</sheetData></worksheet>")


def _mail_with_attachments(count: int) -> bytes:
    message = EmailMessage()
    message["Subject"] = "Scans of the whole archive"
    message["From"] = "robot@example.com"
    message["To"] = "everyone@example.com"
    message.set_content("All the receipts, one attachment each. The kiln is serviced in May.")
    for n in range(count):
        message.add_attachment(
            f"receipt {n}".encode(), maintype="text", subtype="plain", filename=f"receipt-{n}.txt"
        )
    return bytes(message)


def build_office_folder(root: Path, secret_file: Path) -> OfficeFolder:
    root.mkdir(parents=True)
    secret_file.write_text(SECRET)
    folder = OfficeFolder(root)

    (root / "fine.docx").write_bytes(
        _docx_with_body(_document_xml("The harbour crane is inspected every spring."))
    )
    folder.good["fine.docx"] = "The harbour crane is inspected every spring."

    xxe = f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY s SYSTEM "file://{secret_file}">]>'
    (root / "entity.docx").write_bytes(_docx_with_body(_document_xml("Leak: &s;", xxe)))
    folder.either.add("entity.docx")  # read without the entity, or refused: never the secret

    (root / "laughs.docx").write_bytes(_docx_with_body(_document_xml("&lol9;", LAUGHS)))
    folder.either.add("laughs.docx")

    laughs_odt = io.BytesIO()
    with zipfile.ZipFile(laughs_odt, "w") as odt:
        odt.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        odt.writestr(
            "content.xml", LAUGHS + "<office:document-content>&lol9;</office:document-content>"
        )
    (root / "laughs.odt").write_bytes(laughs_odt.getvalue())
    folder.failed["laughs.odt"] = "refused"

    bomb_docx = io.BytesIO()
    with zipfile.ZipFile(bomb_docx, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        with package.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(300):
                member.write(b" " * (1 << 20))
    (root / "bomb.docx").write_bytes(bomb_docx.getvalue())
    folder.skipped["bomb.docx"] = "archive over its limits"

    _zip_bomb(root / "bomb.zip", megabytes=300)
    folder.skipped["bomb.zip"] = "archive over its limits"

    with zipfile.ZipFile(root / "crowd.zip", "w") as crowd:
        for n in range(1500):
            crowd.writestr(f"n/{n}.txt", "x")
    folder.skipped["crowd.zip"] = "archive over its limits"

    _encrypted_zip(root / "locked.zip")
    folder.skipped["locked.zip"] = "password-protected zip archive"

    (root / "nested.zip").write_bytes(_nested_zip(6))
    folder.good["nested.zip"] = "Note of level 5."

    good = _docx_with_body(_document_xml("Truncated."))
    (root / "torn.docx").write_bytes(good[: len(good) // 2])
    (root / "torn.pptx").write_bytes(b"PK\x03\x04" + bytes(200))
    (root / "torn.xlsx").write_bytes(good[: len(good) // 3])
    folder.failed.update(torn_docx := {"torn.docx": "", "torn.pptx": "", "torn.xlsx": ""})
    del torn_docx

    _huge_sheet(root / "million.xlsx", rows=1_000_000)
    folder.either.add("million.xlsx")  # the parse timeout, or read whole in bounded memory

    (root / "attachments.eml").write_bytes(_mail_with_attachments(500))
    folder.good["attachments.eml"] = "The kiln is serviced in May."
    return folder
