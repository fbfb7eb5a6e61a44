"""OpenDocument, RTF, EPUB, notebooks, JSON/JSONL/YAML/XML and legacy .doc: what each reader
finds and where, and how it refuses hostile files (entity bombs, external entities, endless
repeats, DRM, passwords) quickly, with a reason.

Every document is made here, in tmp_path: OpenDocument and EPUB packages are zipped by hand,
the Word 97 file is laid out byte by byte (an OLE compound file holding a FIB and a piece table).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest

from rag.errors import DocumentError
from rag.ingest.readers import ReadContext, Section, Unreadable, packages, parse_document
from rag.ingest.readers import odf as odf_reader

ODF_NAMESPACES = " ".join(
    f'xmlns:{prefix}="urn:oasis:names:tc:opendocument:xmlns:{name}"'
    for prefix, name in (
        ("office", "office:1.0"),
        ("text", "text:1.0"),
        ("table", "table:1.0"),
        ("draw", "drawing:1.0"),
        ("presentation", "presentation:1.0"),
        ("style", "style:1.0"),
        ("svg", "svg-compatible:1.0"),
    )
)
MIMETYPES = {
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
}
BODIES = {"odt": "office:text", "ods": "office:spreadsheet", "odp": "office:presentation"}
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]><lolz>&lol9;</lolz>"
)
PASSWD = (
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    "<r><name>&secret;</name></r>"
)


def parse(path: Path, kind: str, context: ReadContext | None = None) -> list[Section]:
    return parse_document(path.read_bytes(), kind, context)


def texts(sections: list[Section]) -> str:
    return "\n".join(s.text for s in sections)


def odf_file(
    path: Path,
    kind: str,
    body: str = "",
    *,
    content: str | None = None,
    styles: str | None = None,
    manifest: str | None = None,
) -> Path:
    """An OpenDocument package as LibreOffice writes one: ``mimetype`` first and stored."""
    if content is None:
        content = (
            f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NAMESPACES} '
            f'office:version="1.3"><office:body><{BODIES[kind]}>{body}</{BODIES[kind]}>'
            "</office:body></office:document-content>"
        )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("mimetype", MIMETYPES[kind], compress_type=zipfile.ZIP_STORED)
        package.writestr("content.xml", content)
        if styles is not None:
            package.writestr(
                "styles.xml",
                f'<?xml version="1.0"?><office:document-styles {ODF_NAMESPACES}>'
                f"<office:master-styles>{styles}</office:master-styles></office:document-styles>",
            )
        package.writestr(
            "META-INF/manifest.xml",
            manifest
            or '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:'
            'manifest:1.0"><manifest:file-entry manifest:full-path="/" '
            f'manifest:media-type="{MIMETYPES[kind]}"/></manifest:manifest>',
        )
    return path


def row(*cells: str, repeat: int = 1) -> str:
    attribute = f' table:number-rows-repeated="{repeat}"' if repeat > 1 else ""
    inner = "".join(
        f"<table:table-cell><text:p>{c}</text:p></table:table-cell>" if c else "<table:table-cell/>"
        for c in cells
    )
    return f"<table:table-row{attribute}>{inner}</table:table-row>"


# --- OpenDocument text -------------------------------------------------------------------------


def test_text_document_reads_headings_paragraphs_and_tables_in_document_order(
    tmp_path: Path,
) -> None:
    body = (
        '<text:h text:outline-level="1">Budget 2024</text:h>'
        "<text:p>The travel budget is <text:span>4,200 euros</text:span> this year.</text:p>"
        '<table:table table:name="Costs">'
        f"<table:table-header-rows>{row('Item', 'Amount')}</table:table-header-rows>"
        f"{row('Flights', '3,000')}{row('Hotels', '1,200')}</table:table>"
        "<text:p>Approved by the board.</text:p>"
        '<text:h text:outline-level="2">Contacts</text:h>'
        '<text:p>Ask<text:s text:c="3"/>Ana<text:tab/>or Ben<text:line-break/>by mail.</text:p>'
        "<text:list><text:list-item><text:p>first item</text:p>"
        "<text:list><text:list-item><text:p>nested item</text:p></text:list-item></text:list>"
        "</text:list-item><text:list-item><text:list><text:list-item><text:p>only nested</text:p>"
        "</text:list-item></text:list></text:list-item></text:list>"
    )
    sections = parse(odf_file(tmp_path / "budget.odt", "odt", body), "odt")
    assert [(s.heading, s.location) for s in sections] == [
        (("Budget 2024",), ""),
        (("Budget 2024",), "table 1"),
        (("Budget 2024",), ""),
        (("Budget 2024", "Contacts"), ""),
    ]
    assert sections[0].text == "Budget 2024\nThe travel budget is 4,200 euros this year."
    table = sections[1]
    assert table.text == "| Item | Amount |\n| Flights | 3,000 |\n| Hotels | 1,200 |"
    assert table.table is not None
    assert table.table.header == "| Item | Amount |"
    assert table.table.rows == (2, 3)
    assert table.table.label == "table 1"
    assert sections[2].text == "Approved by the board."
    assert sections[3].text == (
        "Contacts\nAsk   Ana\tor Ben\nby mail.\n- first item\n  - nested item\n  - only nested"
    )
    offsets = [s.offset for s in sections]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)


def test_footnotes_are_a_section_of_their_own_and_cited_in_the_text(tmp_path: Path) -> None:
    body = (
        '<text:p>Revenue grew 12%<text:note text:note-class="footnote">'
        "<text:note-citation>1</text:note-citation><text:note-body>"
        "<text:p>Audited by Example &amp; Co.</text:p></text:note-body></text:note>"
        " over the year.</text:p>"
    )
    sections = parse(odf_file(tmp_path / "notes.odt", "odt", body), "odt")
    assert sections[0].text == "Revenue grew 12%[1] over the year."
    assert (sections[1].location, sections[1].text) == ("footnotes", "[1] Audited by Example & Co.")


def test_headers_and_footers_come_from_the_master_pages(tmp_path: Path) -> None:
    styles = (
        '<style:master-page style:name="Standard">'
        "<style:header><text:p>Confidential draft</text:p></style:header>"
        "<style:footer><text:p>Acme Corporation</text:p></style:footer></style:master-page>"
        '<style:master-page style:name="Other">'
        "<style:header><text:p>Confidential draft</text:p></style:header></style:master-page>"
    )
    path = odf_file(tmp_path / "hf.odt", "odt", "<text:p>Body text.</text:p>", styles=styles)
    found = {s.location: s.text for s in parse(path, "odt")}
    assert found == {"": "Body text.", "header": "Confidential draft", "footer": "Acme Corporation"}


def test_comments_deleted_text_and_tables_of_contents_are_not_read(tmp_path: Path) -> None:
    body = (
        "<text:tracked-changes><text:changed-region><text:deletion>"
        "<text:p>deleted words</text:p></text:deletion></text:changed-region>"
        "</text:tracked-changes>"
        "<text:table-of-content><text:index-body><text:p>Intro ..... 1</text:p>"
        "</text:index-body></text:table-of-content>"
        "<text:p>Kept<office:annotation><text:p>a reviewer's remark</text:p></office:annotation>"
        " text.</text:p>"
    )
    sections = parse(odf_file(tmp_path / "c.odt", "odt", body), "odt")
    assert texts(sections) == "Kept text."


# --- OpenDocument spreadsheet ------------------------------------------------------------------


def test_each_sheet_is_a_table_named_after_it_showing_the_displayed_values(
    tmp_path: Path,
) -> None:
    body = (
        '<table:table table:name="Budget">'
        '<table:table-column table:number-columns-repeated="3"/>'
        f"{row('Item', 'Amount')}"
        '<table:table-row><table:table-cell office:value-type="string"><text:p>Rent</text:p>'
        '</table:table-cell><table:table-cell office:value-type="float" office:value="1200">'
        "<text:p>1,200.00 €</text:p></table:table-cell></table:table-row>"
        "</table:table>"
        f'<table:table table:name="Staff">{row("Name")}{row("Zoë")}</table:table>'
    )
    sections = parse(odf_file(tmp_path / "book.ods", "ods", body), "ods")
    assert [(s.location, s.heading) for s in sections] == [
        ("sheet Budget", ("Budget",)),
        ("sheet Staff", ("Staff",)),
    ]
    assert sections[0].text == "| Item | Amount |\n| Rent | 1,200.00 € |"
    assert sections[0].table is not None
    assert sections[0].table.rows == (2,)
    assert sections[1].text == "| Name |\n| Zoë |"


def test_a_million_repeated_empty_rows_and_columns_are_counted_not_expanded(
    tmp_path: Path,
) -> None:
    empty_tail = '<table:table-cell table:number-columns-repeated="16384"/>'
    body = (
        '<table:table table:name="Data">'
        f"<table:table-row><table:table-cell><text:p>Header</text:p></table:table-cell>"
        f"{empty_tail}</table:table-row>"
        f'<table:table-row table:number-rows-repeated="1000">{empty_tail}</table:table-row>'
        f"{row('after the gap')}"
        f'<table:table-row table:number-rows-repeated="1048576">{empty_tail}</table:table-row>'
        "</table:table>"
    )
    path = odf_file(tmp_path / "big.ods", "ods", body)
    started = time.monotonic()
    sections = parse(path, "ods")
    assert time.monotonic() - started < 2
    assert sections[0].text == "| Header |\n| after the gap |"
    assert sections[0].table is not None
    assert sections[0].table.rows == (1002,)


def test_repeated_cells_keep_their_columns_and_repeated_text_is_capped(tmp_path: Path) -> None:
    body = (
        '<table:table table:name="S">'
        "<table:table-row><table:table-cell><text:p>a</text:p></table:table-cell>"
        '<table:table-cell table:number-columns-repeated="2"/>'
        "<table:table-cell><text:p>b</text:p></table:table-cell></table:table-row>"
        '<table:table-row table:number-rows-repeated="1000000">'
        "<table:table-cell><text:p>same</text:p></table:table-cell></table:table-row>"
        "</table:table>"
    )
    sections = parse(odf_file(tmp_path / "rep.ods", "ods", body), "ods")
    lines = sections[0].text.splitlines()
    assert lines[0] == "| a |  |  | b |"
    assert len(lines) == 1 + odf_reader.MAX_REPEAT
    assert sections[0].table is not None
    assert sections[0].table.rows[-1] == 1 + odf_reader.MAX_REPEAT


def test_repeats_that_would_make_millions_of_cells_fail_the_file(tmp_path: Path) -> None:
    wide = (
        '<table:table-cell table:number-columns-repeated="1000"><text:p>x</text:p>'
        "</table:table-cell>"
    )
    rows = f'<table:table-row table:number-rows-repeated="1000">{wide}</table:table-row>' * 3
    path = odf_file(
        tmp_path / "amplified.ods", "ods", f'<table:table table:name="S">{rows}</table:table>'
    )
    started = time.monotonic()
    with pytest.raises(DocumentError, match="spreadsheet over its limits"):
        parse(path, "ods")
    assert time.monotonic() - started < 2


# --- OpenDocument presentation -----------------------------------------------------------------


def slide(name: str, title: str | None, body: str, notes: str | None = None) -> str:
    frames = ""
    if title is not None:
        frames += (
            '<draw:frame presentation:class="title"><draw:text-box>'
            f"<text:p>{title}</text:p></draw:text-box></draw:frame>"
        )
    frames += (
        f'<draw:frame presentation:class="outline"><draw:text-box>{body}</draw:text-box>'
        "</draw:frame>"
    )
    if notes is not None:
        frames += (
            "<presentation:notes><draw:page-thumbnail/>"
            '<draw:frame presentation:class="notes"><draw:text-box>'
            f"<text:p>{notes}</text:p></draw:text-box></draw:frame></presentation:notes>"
        )
    return f'<draw:page draw:name="{name}">{frames}</draw:page>'


def test_slides_are_read_with_their_titles_and_speaker_notes(tmp_path: Path) -> None:
    body = slide(
        "page1",
        "Quarterly results",
        "<text:list><text:list-item><text:p>Sales rose 8% in Q3</text:p></text:list-item>"
        "</text:list>",
        notes="Mention the Lisbon store.",
    ) + slide("Closing", None, "<text:p>Thank you</text:p>")
    sections = parse(odf_file(tmp_path / "deck.odp", "odp", body), "odp")
    assert [(s.location, s.heading, s.text) for s in sections] == [
        ("slide 1", ("Quarterly results",), "Quarterly results\n- Sales rose 8% in Q3"),
        ("speaker notes of slide 1", ("Quarterly results",), "Mention the Lisbon store."),
        ("slide 2", ("Closing",), "Thank you"),
    ]


def test_a_table_on_a_slide_is_a_table_section_of_that_slide(tmp_path: Path) -> None:
    table = f"<table:table>{row('Region', 'Sales')}{row('North', '12')}</table:table>"
    body = (
        '<draw:page draw:name="page1"><draw:frame presentation:class="title"><draw:text-box>'
        "<text:p>Sales</text:p></draw:text-box></draw:frame>"
        f"<draw:frame>{table}</draw:frame></draw:page>"
    )
    sections = parse(odf_file(tmp_path / "t.odp", "odp", body), "odp")
    assert sections[1].location == "slide 1, table 1"
    assert sections[1].heading == ("Sales",)
    assert sections[1].text == "| Region | Sales |\n| North | 12 |"


# --- OpenDocument: hostile and protected files -------------------------------------------------


def test_an_entity_bomb_in_content_xml_fails_fast_without_expanding(tmp_path: Path) -> None:
    path = odf_file(tmp_path / "bomb.odt", "odt", content=BOMB)
    started = time.monotonic()
    with pytest.raises(DocumentError, match="damaged OpenDocument file"):
        parse(path, "odt")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("kind", ["odt", "ods", "odp"])
def test_an_external_entity_in_content_xml_never_reads_the_file_it_names(
    tmp_path: Path, kind: str
) -> None:
    path = odf_file(tmp_path / f"x.{kind}", kind, content=PASSWD)
    with pytest.raises(DocumentError) as raised:
        parse(path, kind)
    assert "root:" not in str(raised.value)


def test_an_encrypted_opendocument_file_is_skipped_as_password_protected(tmp_path: Path) -> None:
    manifest = (
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
        '<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x">'
        '<manifest:algorithm manifest:algorithm-name="Blowfish CFB"/></manifest:encryption-data>'
        "</manifest:file-entry></manifest:manifest>"
    )
    path = odf_file(
        tmp_path / "secret.odt", "odt", content="\x93\x12 encrypted bytes", manifest=manifest
    )
    with pytest.raises(Unreadable, match="password-protected OpenDocument file"):
        parse(path, "odt")


def test_a_member_over_the_size_cap_is_refused_before_it_is_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packages, "MAX_MEMBER_BYTES", 1000)
    body = "<text:p>" + "x" * 2000 + "</text:p>"
    with pytest.raises(DocumentError, match="archive over its limits"):
        parse(odf_file(tmp_path / "big.odt", "odt", body), "odt")


def test_elements_nested_thousands_deep_fail_the_file(tmp_path: Path) -> None:
    body = "<text:p>" + "<text:span>" * 5000 + "deep" + "</text:span>" * 5000 + "</text:p>"
    with pytest.raises(DocumentError, match="nested too deeply"):
        parse(odf_file(tmp_path / "deep.odt", "odt", body), "odt")


# --- RTF ---------------------------------------------------------------------------------------


def test_rtf_text_is_decoded_with_its_escapes(tmp_path: Path) -> None:
    path = tmp_path / "memo.rtf"
    path.write_bytes(
        rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Arial;}}"
        rb"{\colortbl;\red0\green0\blue0;}"
        rb"\f0\fs24 The caf\'e9 budget is \u8364?40 per day.\par"
        rb"{\*\generator Hidden Writer;}Second paragraph.\par}"
    )
    sections = parse(path, "rtf")
    assert len(sections) == 1
    assert sections[0].text == "The café budget is €40 per day.\nSecond paragraph."


def test_rtf_that_striprtf_cannot_parse_fails_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.rtf"
    path.write_bytes(rb"{\rtf1 \uc text}")  # \uc without its number
    with pytest.raises(DocumentError, match="unreadable RTF"):
        parse(path, "rtf")


def test_a_file_named_rtf_that_is_not_rtf_is_read_as_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "notes.rtf"
    path.write_bytes(b"plain words, no rtf header")
    assert parse(path, "rtf")[0].text == "plain words, no rtf header"


# --- EPUB --------------------------------------------------------------------------------------


def xhtml(body: str, title: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html>'
        f'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>'
        f"<body>{body}</body></html>"
    )


def epub_file(
    path: Path,
    chapters: dict[str, str],
    *,
    title: str = "The Sea Atlas",
    encryption: str | None = None,
    opf: str | None = None,
) -> Path:
    items = "".join(
        f'<item id="c{i}" href="text/{name}" media-type="application/xhtml+xml"/>'
        for i, name in enumerate(chapters)
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        book.writestr(
            "OEBPS/content.opf",
            opf
            or '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<dc:title>{title}</dc:title></metadata>"
            f'<manifest>{items}<item id="img" href="images/c.png" media-type="image/png"/>'
            f'</manifest><spine><itemref idref="img"/>{spine}</spine></package>',
        )
        for name, content in chapters.items():
            book.writestr(f"OEBPS/text/{name}", content)
        if encryption is not None:
            book.writestr("META-INF/encryption.xml", encryption)
    return path


def encryption_of(uri: str, algorithm: str) -> str:
    return (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
        f'<enc:EncryptionMethod Algorithm="{algorithm}"/>'
        f'<enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData>'
        "</enc:EncryptedData></encryption>"
    )


BOOK = {
    "one.xhtml": xhtml("<h1>The Voyage</h1><p>The ship left Lisbon in 1497.</p>", "The Sea Atlas"),
    "two.xhtml": xhtml("<p>They came home two years later.</p>", "Homecoming"),
    "three.xhtml": xhtml("<p>Epilogue without a title.</p>"),
}


def test_epub_chapters_are_read_in_spine_order_with_their_titles(tmp_path: Path) -> None:
    sections = parse(epub_file(tmp_path / "atlas.epub", BOOK), "epub")
    assert [(s.location, s.heading, s.text) for s in sections] == [
        ("chapter 1", ("The Voyage",), "The Voyage\n\nThe ship left Lisbon in 1497."),
        ("chapter 2", ("Homecoming",), "They came home two years later."),
        ("chapter 3", ("The Sea Atlas",), "Epilogue without a title."),
    ]


def test_an_epub_whose_chapters_are_encrypted_is_skipped_as_drm_protected(tmp_path: Path) -> None:
    drm = encryption_of("OEBPS/text/one.xhtml", "http://www.w3.org/2001/04/xmlenc#aes128-cbc")
    with pytest.raises(Unreadable, match="DRM-protected EPUB"):
        parse(epub_file(tmp_path / "drm.epub", BOOK, encryption=drm), "epub")


def test_an_epub_with_obfuscated_fonts_only_is_read(tmp_path: Path) -> None:
    fonts = encryption_of("OEBPS/fonts/a.otf", "http://www.idpf.org/2008/embedding")
    sections = parse(epub_file(tmp_path / "fonts.epub", BOOK, encryption=fonts), "epub")
    assert len(sections) == 3


def test_an_epub_without_its_package_document_fails_as_damaged(tmp_path: Path) -> None:
    path = epub_file(tmp_path / "broken.epub", BOOK)
    with zipfile.ZipFile(path) as book:
        members = {n: book.read(n) for n in book.namelist() if n != "OEBPS/content.opf"}
    with zipfile.ZipFile(path, "w") as book:
        for name, data in members.items():
            book.writestr(name, data)
    with pytest.raises(DocumentError, match="damaged EPUB"):
        parse(path, "epub")


def test_an_external_entity_in_the_package_document_fails_the_book(tmp_path: Path) -> None:
    path = epub_file(tmp_path / "xxe.epub", BOOK, opf=PASSWD)
    with pytest.raises(DocumentError, match="damaged EPUB") as raised:
        parse(path, "epub")
    assert "root:" not in str(raised.value)


def test_a_chapter_missing_from_the_archive_is_named_among_the_skipped(tmp_path: Path) -> None:
    path = epub_file(tmp_path / "gap.epub", BOOK)
    with zipfile.ZipFile(path) as book:
        members = {n: book.read(n) for n in book.namelist() if not n.endswith("two.xhtml")}
    with zipfile.ZipFile(path, "w") as book:
        for name, data in members.items():
            book.writestr(name, data)
    context = ReadContext()
    sections = parse(path, "epub", context)
    assert [s.location for s in sections] == ["chapter 1", "chapter 2"]
    assert context.skipped == [("OEBPS/text/two.xhtml", "missing from the EPUB")]


# --- Jupyter notebooks -------------------------------------------------------------------------


def notebook_file(path: Path, cells: list[dict[str, object]], language: str = "python") -> Path:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "k", "display_name": "K", "language": language}},
        "cells": cells,
    }
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def test_notebook_cells_are_read_in_order_with_code_fenced_and_text_outputs(
    tmp_path: Path,
) -> None:
    cells: list[dict[str, object]] = [
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": ["# Analysis\n", "We count the birds."],
        },
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 1,
            "source": "total = 42\nprint('birds', total)",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["birds 42\n"]},
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": "iVBORw0KGgoAAAANSUhEUg", "text/html": "<b>chart</b>"},
                },
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {"text/plain": "42"},
                },
            ],
        },
        {"cell_type": "markdown", "metadata": {}, "source": "## Method\nBinoculars."},
    ]
    sections = parse(notebook_file(tmp_path / "birds.ipynb", cells), "ipynb")
    assert [(s.location, s.heading) for s in sections] == [
        ("cell 1", ("Analysis",)),
        ("cell 2", ("Analysis",)),
        ("cell 3", ("Analysis", "Method")),
    ]
    assert sections[0].text == "# Analysis\nWe count the birds."
    assert sections[1].text == "```python\ntotal = 42\nprint('birds', total)\n```\nbirds 42\n42"
    assert "iVBOR" not in texts(sections)
    assert "chart" not in texts(sections)


def test_the_code_fence_names_the_kernel_language(tmp_path: Path) -> None:
    cells: list[dict[str, object]] = [
        {"cell_type": "code", "metadata": {}, "source": "println(1)", "outputs": []}
    ]
    sections = parse(notebook_file(tmp_path / "j.ipynb", cells, language="julia"), "ipynb")
    assert sections[0].text.startswith("```julia\n")


def test_a_notebook_that_is_not_json_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text('{"cells": [', encoding="utf-8")
    with pytest.raises(DocumentError, match="not a valid notebook"):
        parse(path, "ipynb")


# --- JSON, JSON Lines, YAML, XML ---------------------------------------------------------------


def test_json_is_indexed_pretty_printed_with_its_keys_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "staff.json"
    path.write_text(json.dumps({"team": {"lead": "Zoë Ünal", "size": 7}}), encoding="utf-8")
    assert parse(path, "json")[0].text == '{\n "team": {\n  "lead": "Zoë Ünal",\n  "size": 7\n }\n}'


def test_invalid_or_absurdly_nested_json_fails_as_not_valid_json(tmp_path: Path) -> None:
    broken, deep = tmp_path / "broken.json", tmp_path / "deep.json"
    broken.write_text('{"a": ', encoding="utf-8")
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    for path in (broken, deep):
        with pytest.raises(DocumentError, match="not valid JSON"):
            parse(path, "json")


def test_json_lines_keep_good_lines_and_name_the_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "login", "user": "ana"}\nnot json\n\n{"event": "logout"}\n')
    context = ReadContext()
    sections = parse(path, "jsonl", context)
    assert sections[0].text == '{"event": "login", "user": "ana"}\n{"event": "logout"}'
    assert sections[0].location == ""
    assert context.skipped == [("line 2", "not valid JSON (left out)")]
    path.write_text("nope\nstill nope\n")
    with pytest.raises(DocumentError, match="not valid JSON Lines"):
        parse(path, "jsonl")


def test_yaml_is_indexed_as_written_and_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    text = "service: ingest\nreplicas: 3\nhook: !!python/object/apply:os.system ['echo owned']\n"
    path.write_text(text, encoding="utf-8")
    assert parse(path, "yaml")[0].text == text


def test_xml_gives_one_tag_and_text_line_per_element_with_text(tmp_path: Path) -> None:
    path = tmp_path / "config.xml"
    path.write_text(
        '<?xml version="1.0"?><config xmlns="urn:x"><db host="h">primary</db>'
        "<note>Keep <b>two</b> replicas</note><empty/></config>",
        encoding="utf-8",
    )
    assert parse(path, "xml")[0].text == "db: primary\nnote: Keep replicas\nb: two"


def test_an_xml_bomb_or_external_entity_fails_fast_and_reads_nothing(tmp_path: Path) -> None:
    bomb, xxe = tmp_path / "bomb.xml", tmp_path / "xxe.xml"
    bomb.write_text(BOMB, encoding="utf-8")
    xxe.write_text(PASSWD, encoding="utf-8")
    started = time.monotonic()
    for path in (bomb, xxe):
        with pytest.raises(DocumentError, match="not valid XML") as raised:
            parse(path, "xml")
        assert "root:" not in str(raised.value)
    assert time.monotonic() - started < 2


# --- legacy Word (.doc) through antiword -------------------------------------------------------

SECTOR, FREE, END, FATSECT, NOSTREAM = 512, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def _directory_entry(name: str, kind: int, start: int, size: int, child: int, right: int) -> bytes:
    encoded = (name + "\0").encode("utf-16-le")
    return (
        encoded.ljust(64, b"\0")
        + struct.pack("<HBB3I", len(encoded), kind, 1, NOSTREAM, right, child)
        + b"\0" * 36
        + struct.pack("<IIi", start, size, 0)
    )


def compound_file(streams: list[tuple[str, bytes]]) -> bytes:
    """A minimal OLE compound file (version 3): one FAT sector, one directory sector, then the
    streams, each of at least 4096 bytes so that none lives in the mini stream."""
    fat, body, start = [FATSECT, END], b"", 2
    entries = [_directory_entry("Root Entry", 5, END, 0, child=1, right=NOSTREAM)]
    for i, (name, data) in enumerate(streams):
        count = -(-len(data) // SECTOR)
        fat += [start + k + 1 for k in range(count - 1)] + [END]
        right = i + 2 if i + 1 < len(streams) else NOSTREAM
        entries.append(_directory_entry(name, 2, start, len(data), child=NOSTREAM, right=right))
        body += data.ljust(count * SECTOR, b"\0")
        start += count
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\0" * 16
        + struct.pack(
            "<HHHHH6xIIIIIIIII", 0x3E, 3, 0xFFFE, 9, 6, 0, 1, 1, 0, 0x1000, END, 0, END, 0
        )
        + struct.pack("<109I", 0, *([FREE] * 108))
    )
    fat_sector = struct.pack(f"<{len(fat)}I", *fat).ljust(SECTOR, b"\xff")
    return header + fat_sector + b"".join(entries).ljust(SECTOR, b"\0") + body


def word97_file(path: Path, text: str, *, encrypted: bool = False) -> Path:
    """A Word 97 document: a FIB, the text as UTF-16, and in the 1Table stream a one-piece
    piece table (CLX) and a stylesheet; ``encrypted`` sets the FIB's fEncrypted flag."""
    chars = text.encode("utf-16-le")
    fib = bytearray(0x400)
    struct.pack_into("<HH", fib, 0, 0xA5EC, 193)  # wIdent, nFib of Word 97
    struct.pack_into("<H", fib, 0x0A, (1 << 9) | ((1 << 8) if encrypted else 0))  # 1Table
    struct.pack_into("<II", fib, 0x18, len(fib), len(fib) + len(chars))  # fcMin, fcMac
    struct.pack_into("<I", fib, 0x4C, len(text))  # ccpText
    pieces = struct.pack("<II", 0, len(text)) + struct.pack("<HIH", 0, len(fib), 0)
    clx = b"\x02" + struct.pack("<I", len(pieces)) + pieces
    struct.pack_into("<II", fib, 0x1A2, 0, len(clx))  # fcClx, lcbClx
    # A stylesheet of one empty style (antiword reads its header unchecked).
    stsh = struct.pack("<H6H3HH", 18, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0)
    struct.pack_into("<II", fib, 0xA2, len(clx), len(stsh))  # fcStshf, lcbStshf
    document = (bytes(fib) + chars).ljust(4096, b"\0")
    path.write_bytes(
        compound_file([("WordDocument", document), ("1Table", (clx + stsh).ljust(4096, b"\0"))])
    )
    return path


def require_antiword() -> None:
    if shutil.which("antiword") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("antiword is missing; CI installs it (apt-get install antiword)")
        pytest.skip("needs antiword: apt-get install antiword")


def test_a_word_97_document_is_read_through_antiword_as_utf8(tmp_path: Path) -> None:
    require_antiword()
    path = word97_file(tmp_path / "memo.doc", "The Zürich office opened in 1998.\rIt cost €5m.\r")
    sections = parse(path, "doc")
    assert len(sections) == 1
    assert sections[0].text == "The Zürich office opened in 1998.\nIt cost €5m."


def test_an_encrypted_word_document_is_skipped_as_password_protected(tmp_path: Path) -> None:
    require_antiword()
    path = word97_file(tmp_path / "secret.doc", "hidden\r", encrypted=True)
    with pytest.raises(Unreadable, match="password-protected Office document"):
        parse(path, "doc")


def test_an_ole_file_that_is_no_word_document_fails_with_antiwords_reason(tmp_path: Path) -> None:
    require_antiword()
    path = tmp_path / "fake.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "WordDocument".encode("utf-16-le") * 40)
    with pytest.raises(DocumentError, match="is not a Word Document") as raised:
        parse(path, "doc")
    assert not isinstance(raised.value, Unreadable)
    assert str(tmp_path) not in str(raised.value)


def test_without_antiword_a_doc_is_skipped_with_that_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    path = word97_file(tmp_path / "memo.doc", "text\r")
    with pytest.raises(Unreadable, match=r"legacy \.doc \(antiword is not installed\)"):
        parse(path, "doc")
