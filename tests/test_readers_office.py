"""Office documents and delimited text: what each reader gives a citation (text, heading path,
location, table rows), and how damaged or hostile files fail."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.errors import DocumentError
from rag.ingest.readers import Section, Unreadable, parse_document
from rag.ingest.readers.sheets import display_value, sniff_delimiter

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def rewrite_zip(data: bytes, changes: dict[str, Callable[[bytes], bytes]]) -> bytes:
    """The package with some members rewritten (a name absent from it is added from b"")."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        names = source.namelist()
        for name in names + [n for n in changes if n not in names]:
            content = source.read(name) if name in names else b""
            target.writestr(name, changes[name](content) if name in changes else content)
    return out.getvalue()


def only(sections: list[Section], location: str) -> Section:
    found = [s for s in sections if s.location == location]
    assert len(found) == 1, [s.location for s in sections]
    return found[0]


# --- Word -------------------------------------------------------------------------------------


def notes_xml(kind: str, text: str) -> bytes:
    """A notes part as Word writes it: the separator notes first, then note 1."""
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:{kind}s xmlns:w="{W_NS}">
<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>
<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r>
</w:p></w:{kind}>
<w:{kind} w:id="1"><w:p><w:r><w:{kind}Ref/></w:r><w:r><w:t xml:space="preserve"> {text}</w:t>
</w:r></w:p></w:{kind}>
</w:{kind}s>""".encode()


def with_note(data: bytes, after_text: str, text: str, kind: str = "footnote") -> bytes:
    """A footnote or endnote (id 1) referenced after the run holding ``after_text``: the part,
    its relationship, its content type and the reference, as Word writes them."""
    reference = f'<w:r><w:{kind}Reference w:id="1"/></w:r>'.encode()
    run_end = f"{after_text}</w:t></w:r>".encode()
    relationship = (
        f'<Relationship Id="rId{kind}s" Type="http://schemas.openxmlformats.org/officeDocument/'
        f'2006/relationships/{kind}s" Target="{kind}s.xml"/></Relationships>'
    ).encode()
    override = (
        f'<Override PartName="/word/{kind}s.xml" ContentType="application/vnd.openxmlformats-'
        f'officedocument.wordprocessingml.{kind}s+xml"/></Types>'
    ).encode()
    return rewrite_zip(
        data,
        {
            "word/document.xml": lambda c: c.replace(run_end, run_end + reference),
            "word/_rels/document.xml.rels": lambda c: c.replace(b"</Relationships>", relationship),
            "[Content_Types].xml": lambda c: c.replace(b"</Types>", override),
            f"word/{kind}s.xml": lambda _: notes_xml(kind, text),
        },
    )


def word_handbook() -> bytes:
    import docx

    document = docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "ACME Staff Handbook"
    section.footer.paragraphs[0].text = "Internal use only"
    document.add_paragraph("Staff Handbook", style="Title")
    document.add_paragraph("This handbook applies to all employees.")
    document.add_heading("Annual leave", level=1)
    document.add_paragraph("Annual leave is 25 days.")
    document.add_heading("Equipment budget", level=2)
    document.add_paragraph("Budgets per office:")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("Office", "Budget", "Owner"), ("Berlin", "318,500", "Ana"),
                             ("Lisbon", "92,000", "Rui")]):  # fmt: skip
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Unspent budget returns to the central fund.")
    out = io.BytesIO()
    document.save(out)
    return with_note(
        out.getvalue(), "Annual leave is 25 days.", "Part-time staff\nget leave pro rata."
    )


def test_word_headings_give_the_heading_path_of_the_text_up_to_the_next_heading() -> None:
    sections = parse_document(word_handbook(), "docx")
    prose = [s for s in sections if s.location == "" and s.table is None]

    assert [(s.heading, s.text) for s in prose] == [
        (("Staff Handbook",), "Staff Handbook\nThis handbook applies to all employees."),
        (("Staff Handbook", "Annual leave"), "Annual leave\nAnnual leave is 25 days.[1]"),
        (("Staff Handbook", "Annual leave", "Equipment budget"),
         "Equipment budget\nBudgets per office:"),
        (("Staff Handbook", "Annual leave", "Equipment budget"),
         "Unspent budget returns to the central fund."),
    ]  # fmt: skip


def test_word_table_is_its_own_section_of_rows_between_the_prose_around_it() -> None:
    sections = parse_document(word_handbook(), "docx")
    body = [s for s in sections if s.location in ("", "table 1")]
    table = only(sections, "table 1")

    assert [s.text.splitlines()[0] for s in body][2:] == [
        "Equipment budget",
        "| Office | Budget | Owner |",
        "Unspent budget returns to the central fund.",
    ]
    assert table.text == (
        "| Office | Budget | Owner |\n| Berlin | 318,500 | Ana |\n| Lisbon | 92,000 | Rui |"
    )
    assert table.heading == ("Staff Handbook", "Annual leave", "Equipment budget")
    assert table.table is not None
    assert table.table.header == "| Office | Budget | Owner |"
    assert table.table.rows == (2, 3)
    assert table.table.label == "table 1"


def test_word_header_footer_and_footnotes_have_their_own_locations() -> None:
    sections = parse_document(word_handbook(), "docx")

    assert only(sections, "header").text == "ACME Staff Handbook"
    assert only(sections, "footer").text == "Internal use only"
    assert only(sections, "footnotes").text == "[1] Part-time staff get leave pro rata."
    assert [s.location for s in sections] == [
        "header", "", "", "", "table 1", "", "footer", "footnotes",
    ]  # fmt: skip
    offsets = [s.offset for s in sections]
    assert offsets == sorted(set(offsets)), "passages are ordered by their offsets"


def test_word_endnotes_are_numbered_lines_of_their_own() -> None:
    data = with_note(word_handbook(), "Budgets per office:", "Figures of May 2024.", "endnote")

    sections = parse_document(data, "docx")
    assert only(sections, "endnotes").text == "[1] Figures of May 2024."
    assert only(sections, "footnotes").text == "[1] Part-time staff get leave pro rata."
    assert "Budgets per office:[1]" in "\n".join(s.text for s in sections)


def test_word_headers_repeated_by_later_sections_are_read_once() -> None:
    import docx
    from docx.enum.section import WD_SECTION

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Quarterly report"
    document.add_paragraph("First part.")
    later = document.add_section(WD_SECTION.NEW_PAGE)
    later.header.is_linked_to_previous = False
    later.header.paragraphs[0].text = "Quarterly report"
    document.add_paragraph("Second part.")
    out = io.BytesIO()
    document.save(out)

    assert only(parse_document(out.getvalue(), "docx"), "header").text == "Quarterly report"


def test_word_merged_cells_are_read_once_per_row_and_keep_their_columns() -> None:
    import docx

    document = docx.Document()
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("Region", "Q1", "Q2"), ("North", "10", "12"), ("", "", "")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 0).merge(table.cell(2, 1)).text = "Total to date"
    table.cell(2, 2).text = "22"
    out = io.BytesIO()
    document.save(out)

    table_text = only(parse_document(out.getvalue(), "docx"), "table 1").text
    assert table_text.splitlines()[-1] == "| Total to date |  | 22 |"


def test_macro_enabled_word_document_is_read_like_a_docx() -> None:
    main = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    docm = rewrite_zip(
        word_handbook(),
        {"[Content_Types].xml": lambda c: c.replace(
            main, b"application/vnd.ms-word.document.macroEnabled.main+xml")},
    )  # fmt: skip

    assert "Annual leave is 25 days." in "\n".join(s.text for s in parse_document(docm, "docx"))


def test_pdf_named_docx_is_read_as_a_pdf(tmp_path: Path) -> None:
    from tests.documents import write_pdf

    pdf = write_pdf(tmp_path / "report.docx", ["Revenue grew in the third quarter."])

    [page] = parse_document(pdf.read_bytes(), "docx")
    assert page.page == 1
    assert "Revenue grew in the third quarter." in page.text


def test_random_bytes_named_docx_fail_as_not_a_word_document() -> None:
    import random

    noise = random.Random(7).randbytes(4096)

    with pytest.raises(DocumentError, match="not a valid .docx") as caught:
        parse_document(noise, "docx")
    assert not isinstance(caught.value, Unreadable)


def test_truncated_docx_fails_with_a_document_error() -> None:
    data = word_handbook()

    for cut in (len(data) // 2, len(data) - 30):
        with pytest.raises(DocumentError, match="damaged"):
            parse_document(data[:cut], "docx")


def test_docx_without_its_main_document_fails_as_damaged() -> None:
    source = zipfile.ZipFile(io.BytesIO(word_handbook()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            if name != "word/document.xml":
                target.writestr(name, source.read(name))

    with pytest.raises(DocumentError, match="damaged Word document"):
        parse_document(out.getvalue(), "docx")


def with_doctype(doctype: bytes, entity_use: bytes) -> bytes:
    """The handbook with a DTD before document.xml's root and an entity in its text."""

    def change(xml: bytes) -> bytes:
        root = xml.index(b"<w:document")
        xml = xml[:root] + doctype + xml[root:]
        return xml.replace(b"Annual leave is 25 days.", entity_use)

    return rewrite_zip(word_handbook(), {"word/document.xml": change})


def read_or_refuse(data: bytes) -> str:
    """The text read, or the reason refused; within seconds either way."""
    started = time.monotonic()
    try:
        text = "\n".join(s.text for s in parse_document(data, "docx"))
    except DocumentError as exc:
        text = str(exc)
    assert time.monotonic() - started < 5
    return text


def test_billion_laughs_in_a_word_document_does_not_expand() -> None:
    entities = b'<!ENTITY lol0 "lollollollollollollollollollol">' + b"".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">'.encode() for i in range(1, 10)
    )
    bomb = with_doctype(b"<!DOCTYPE w:document [" + entities + b"]>", b"&lol9;")

    assert "lollol" not in read_or_refuse(bomb)


def test_external_entity_in_a_word_document_is_never_loaded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4711")
    for url in (secret.as_uri(), "file:///etc/passwd"):
        doctype = f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "{url}">]>'.encode()

        text = read_or_refuse(with_doctype(doctype, b"&xxe;"))

        assert "TOP-SECRET-4711" not in text
        assert "root:" not in text


def test_footnotes_with_a_dtd_fail_instead_of_being_parsed() -> None:
    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE w:footnotes [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    )
    data = rewrite_zip(
        word_handbook(),
        {"word/footnotes.xml": lambda c: hostile + c[c.index(b"<w:footnotes") :]},
    )

    with pytest.raises(DocumentError, match="damaged Word document"):
        parse_document(data, "docx")


# --- PowerPoint -------------------------------------------------------------------------------


def slide_deck() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    cover = deck.slides.add_slide(deck.slide_layouts[0])
    cover.shapes.title.text = "Quarterly Review"
    cover.placeholders[1].text = "Finance team"

    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "Regional results"
    box = slide.shapes.add_textbox(Inches(1), Inches(1.5), Inches(6), Inches(1))
    box.text_frame.text = "Revenue rose in every region."
    box.text_frame.add_paragraph().text = "The north grew fastest."
    table = slide.shapes.add_table(3, 2, Inches(1), Inches(3), Inches(6), Inches(2)).table
    for r, row in enumerate([("Region", "Revenue"), ("North", "1.2m"), ("South", "0.9m")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    group = slide.shapes.add_group_shape()
    footnote = group.shapes.add_textbox(Inches(1), Inches(5.5), Inches(6), Inches(1))
    footnote.text_frame.text = "Figures are unaudited."
    slide.notes_slide.notes_text_frame.text = "Mention the currency effect."
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_slides_are_sections_headed_by_their_titles() -> None:
    sections = parse_document(slide_deck(), "pptx")

    cover = only(sections, "slide 1")
    assert cover.text == "Quarterly Review\nFinance team"
    assert cover.heading == ("Quarterly Review",)
    slide_text = [s for s in sections if s.location == "slide 2"]
    assert [s.text for s in slide_text] == [
        "Regional results\nRevenue rose in every region.\nThe north grew fastest.",
        "Figures are unaudited.",
    ]
    assert all(s.heading == ("Regional results",) for s in slide_text)


def test_slide_table_is_a_section_of_its_own() -> None:
    table = only(parse_document(slide_deck(), "pptx"), "slide 2, table 1")

    assert table.text == "| Region | Revenue |\n| North | 1.2m |\n| South | 0.9m |"
    assert table.heading == ("Regional results",)
    assert table.table is not None
    assert table.table.rows == (2, 3)


def test_speaker_notes_are_read_with_their_slide() -> None:
    sections = parse_document(slide_deck(), "pptx")

    notes = only(sections, "speaker notes of slide 2")
    assert notes.text == "Mention the currency effect."
    assert notes.heading == ("Regional results",)
    assert [s.location for s in sections] == [
        "slide 1", "slide 2", "slide 2, table 1", "slide 2", "speaker notes of slide 2",
    ]  # fmt: skip


def test_damaged_presentation_fails_with_a_document_error() -> None:
    data = rewrite_zip(slide_deck(), {"ppt/slides/slide2.xml": lambda c: c[: len(c) // 2]})

    with pytest.raises(DocumentError, match="damaged PowerPoint presentation"):
        parse_document(data, "pptx")


# --- Excel ------------------------------------------------------------------------------------


def budget_workbook(tmp_path: Path) -> bytes:
    import xlsxwriter

    path = tmp_path / "budget.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    money = workbook.add_format({"num_format": "#,##0"})
    percent = workbook.add_format({"num_format": "0.0%"})
    day = workbook.add_format({"num_format": "yyyy-mm-dd"})
    budget = workbook.add_worksheet("Budget")
    budget.write_row(0, 0, ["Office", "Budget", "Share", "Approved", "Signed off"])
    budget.write_string(1, 0, "Berlin")
    budget.write_number(1, 1, 318500, money)
    budget.write_number(1, 2, 0.775, percent)
    budget.write_boolean(1, 3, True)
    budget.write_datetime(1, 4, dt.datetime(2024, 3, 31), day)
    budget.write_row(2, 0, ["Lisbon", 92000.0, 0.1 + 0.2, False])
    budget.write_formula(3, 1, "=B2+B3", money, 410500)
    budget.write_string(3, 0, "Total")
    staff = workbook.add_worksheet("Staff")
    staff.write_row(2, 1, ["Name", "Started"])  # the header need not be in A1
    staff.write_row(3, 1, ["Ana", "Q1"])
    chart = workbook.add_chart({"type": "column"})
    chart.add_series({"values": "=Budget!$B$2:$B$3"})
    workbook.add_chartsheet("Chart").set_chart(chart)
    workbook.close()
    return path.read_bytes()


def test_every_worksheet_is_a_table_headed_by_its_first_row(tmp_path: Path) -> None:
    sections = parse_document(budget_workbook(tmp_path), "xlsx")

    assert [(s.location, s.heading) for s in sections] == [
        ("sheet Budget", ("Budget",)),
        ("sheet Staff", ("Staff",)),
    ]  # the chart sheet holds no cells
    budget, staff = sections
    assert budget.table is not None
    assert budget.table.header == "| Office | Budget | Share | Approved | Signed off |"
    assert budget.table.rows == (2, 3, 4)
    assert budget.table.label == "sheet Budget"
    assert staff.text == "|  | Name | Started |\n|  | Ana | Q1 |"
    assert staff.table is not None
    assert staff.table.rows == (4,)


def test_cells_read_as_excel_shows_them_and_formulas_as_their_cached_values(
    tmp_path: Path,
) -> None:
    [budget, _] = parse_document(budget_workbook(tmp_path), "xlsx")

    assert budget.text.splitlines()[1:] == [
        "| Berlin | 318,500 | 77.5% | TRUE | 2024-03-31 |",
        "| Lisbon | 92000 | 0.3 | FALSE |",
        "| Total | 410,500 |",
    ]


def test_formula_without_a_cached_value_reads_as_empty(tmp_path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sums"
    sheet.append(["Item", "Amount"])
    sheet.append(["Total", "=1+1"])  # openpyxl never computes it
    path = tmp_path / "sums.xlsx"
    workbook.save(path)

    [sums] = parse_document(path.read_bytes(), "xlsx")
    assert sums.text == "| Item | Amount |\n| Total |"


@pytest.mark.parametrize(
    ("value", "number_format", "shown"),
    [
        (3, "General", "3"),
        (3.0, "General", "3"),
        (0.1 + 0.2, "General", "0.3"),
        (2 / 3, "General", "0.6666666667"),
        (1234567.5, "#,##0.00", "1,234,567.50"),
        (-1234.4, "#,##0", "-1,234"),
        (0.0425, "0.00%", "4.25%"),
        (0.5, "0%", "50%"),
        (1.5, "0.0#", "1.5"),
        (1.25, "0.0#", "1.25"),
        (12.5, '"$"#,##0.00_);[Red]("$"#,##0.00)', "12.50"),
        (12345.678, "0.00E+00", "12345.678"),
        (dt.datetime(2024, 3, 31, 14, 30), "General", "2024-03-31 14:30"),
        (dt.date(2024, 3, 31), "General", "2024-03-31"),
        (dt.time(9, 5, 7), "General", "09:05:07"),
        (dt.timedelta(hours=26, minutes=3), "[h]:mm", "26:03:00"),
        (True, "General", "TRUE"),
        ("#DIV/0!", "General", "#DIV/0!"),
    ],
)
def test_cell_values_are_shown_as_in_excel(value: object, number_format: str, shown: str) -> None:
    assert display_value(value, number_format) == shown


def test_damaged_workbook_fails_with_a_document_error(tmp_path: Path) -> None:
    data = rewrite_zip(budget_workbook(tmp_path), {"xl/workbook.xml": lambda c: c[:40]})

    with pytest.raises(DocumentError, match="damaged Excel workbook"):
        parse_document(data, "xlsx")


# --- CSV and TSV ------------------------------------------------------------------------------


def test_csv_with_semicolons_and_a_byte_order_mark_is_one_table() -> None:
    text = 'Office;Budget;Note\nBerlin;318.500,00;"rent; heating"\n\nLisbon;92.000,00;\n'
    data = "\ufeff".encode() + text.encode()

    [table] = parse_document(data, "csv")
    assert table.text.splitlines() == [
        "| Office | Budget | Note |",
        "| Berlin | 318.500,00 | rent; heating |",
        "| Lisbon | 92.000,00 |",
    ]
    assert table.location == ""
    assert table.table is not None
    assert table.table.rows == (2, 4)  # the empty record 3 is left out


def test_csv_record_numbers_count_records_not_lines() -> None:
    data = b'name,comment\nAna,"two\nlines"\nRui,short\n'

    [table] = parse_document(data, "csv")
    assert table.text.splitlines()[1:] == ["| Ana | two lines |", "| Rui | short |"]
    assert table.table is not None
    assert table.table.rows == (2, 3)


def test_tsv_is_split_at_tabs_only() -> None:
    data = "Name\tRole, team\nAna\tLead, Data\n".encode("cp1252")

    [table] = parse_document(data, "tsv")
    assert table.text == "| Name | Role, team |\n| Ana | Lead, Data |"


def test_csv_with_an_unclosed_quote_reads_what_the_csv_module_yields() -> None:
    data = b'id,text\n1,"fine"\n2,"never closed\n3,lost\n'

    [table] = parse_document(data, "csv")
    assert table.text.splitlines()[1:] == ["| 1 | fine |", "| 2 | never closed 3,lost |"]


def test_csv_cells_up_to_the_field_limit_are_read_and_longer_ones_fail() -> None:
    big = "x" * 500_000  # over the csv module's default limit of 131,072
    [table] = parse_document(f"a,b\n1,{big}\n".encode(), "csv")
    assert big in table.text

    runaway = b'a,b\n1,"' + b"y" * 10_000_001 + b"\n"
    with pytest.raises(DocumentError, match="malformed CSV"):
        parse_document(runaway, "csv")


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("a,b,c\n1,2,3\n", ","),
        ("a;b\n1,5;2,5\n3,0;4,0\n", ";"),
        ("a|b|c\n1|2|3\n", "|"),
        ("a\tb\n1\t2\n", "\t"),
        ("single column\nvalue\n", ","),
        ('"x, y";z\n"1, 2";3\n', ";"),
    ],
)
def test_delimiter_is_the_one_that_splits_records_evenly(sample: str, delimiter: str) -> None:
    assert sniff_delimiter(sample) == delimiter


def test_delimiter_sniffing_stays_linear_on_unpaired_quotes() -> None:
    hostile = '\n"' * 32768  # csv.Sniffer takes about a minute on this

    started = time.monotonic()
    [table] = parse_document(("a,b\n" + hostile).encode(), "csv")
    assert time.monotonic() - started < 2
    assert table.text == "| a | b |"  # the quoted line breaks hold no text


def test_csv_module_is_not_left_with_a_lower_field_limit() -> None:
    parse_document(b"a,b\n1,2\n", "csv")

    assert csv.field_size_limit() >= 10_000_000


def test_stale_sheet_dimension_does_not_cut_the_rows_short(tmp_path: Path) -> None:
    data = rewrite_zip(
        budget_workbook(tmp_path),
        {"xl/worksheets/sheet1.xml": lambda c: c.replace(b'<dimension ref="A1:E4"/>',
                                                           b'<dimension ref="A1"/>')},
    )  # fmt: skip

    budget = parse_document(data, "xlsx")[0]
    assert budget.table is not None
    assert budget.table.rows == (2, 3, 4)
    assert "| Total | 410,500 |" in budget.text


# --- Hostile XML in slides and workbooks ------------------------------------------------------

XXE = b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
LAUGHS = (
    b'<!DOCTYPE x [<!ENTITY lol0 "lollollollollollollollollollol">'
    + b"".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">'.encode() for i in range(1, 10))
    + b"]>"
)


def with_entity(root: bytes, doctype: bytes, old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def change(xml: bytes) -> bytes:
        at = xml.index(root)
        assert old in xml
        return (xml[:at] + doctype + xml[at:]).replace(old, new, 1)

    return change


@pytest.mark.parametrize(
    ("kind", "member", "change"),
    [
        ("pptx", "ppt/slides/slide2.xml",
         with_entity(b"<p:sld", XXE, b"<a:t>North</a:t>", b"<a:t>&xxe;</a:t>")),
        ("pptx", "ppt/slides/slide2.xml",
         with_entity(b"<p:sld", LAUGHS, b"<a:t>North</a:t>", b"<a:t>&lol9;</a:t>")),
        ("xlsx", "xl/worksheets/sheet1.xml",
         with_entity(b"<worksheet", XXE, b"</row>",
                     b'<c r="Z1" t="inlineStr"><is><t>&xxe;</t></is></c></row>')),
        ("xlsx", "xl/sharedStrings.xml",
         with_entity(b"<sst", LAUGHS, b"<t>Office</t>", b"<t>&lol9;</t>")),
    ],
)  # fmt: skip
def test_entities_in_slides_and_workbooks_are_never_expanded_or_loaded(
    tmp_path: Path, kind: str, member: str, change: Callable[[bytes], bytes]
) -> None:
    original = slide_deck() if kind == "pptx" else budget_workbook(tmp_path)
    data = rewrite_zip(original, {member: change})

    started = time.monotonic()
    try:
        text = "\n".join(s.text for s in parse_document(data, kind))
    except DocumentError as exc:
        text = str(exc)
    assert time.monotonic() - started < 5
    assert "root:" not in text
    assert "lollol" not in text
