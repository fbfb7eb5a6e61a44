"""Spreadsheets (.xlsx, .xlsm) and delimited text (.csv, .tsv): one table section per sheet.

Cells read as a user sees them in Excel: whole numbers without ".0", other numbers to ten
significant digits (never the binary expansion of 0.1 + 0.2), a thousands separator or a
percent where the cell's number format has one, dates as ISO dates (with the time when it is
not midnight), TRUE/FALSE. A formula gives the value Excel cached when it last saved the file;
a workbook written by a library that never computed its formulas (openpyxl, for one) has no
cached values, and those cells read as empty.

Workbooks are streamed (openpyxl's read-only mode), one row at a time; a sheet is read whole,
however long: the worker's timeout and memory cap bound it. openpyxl parses sheets with
defusedxml when it is installed (it is) and its other parts with lxml, entities unresolved.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, in_order, short_reason
from rag.ingest.readers.tables import table_section
from rag.ingest.readers.text import decode_text

CSV_FIELD_LIMIT = 10 * 1_000_000  # characters in one cell; the csv module's default is 131,072
SNIFF_CHARS = 64 * 1024
SNIFF_RECORDS = 200
DELIMITERS = (",", ";", "\t", "|")  # by preference when two fit equally well


def read_xlsx(data: bytes, context: ReadContext) -> list[Section]:
    try:
        with warnings.catch_warnings():
            # openpyxl warns of each extension it does not read (data validation, slicers...).
            warnings.simplefilter("ignore")
            sections = _workbook_tables(data)
    except (DocumentError, MemoryError):
        raise
    except Exception as exc:  # openpyxl, zipfile and the XML parsers raise assorted types
        raise DocumentError(f"damaged Excel workbook ({short_reason(exc)})") from exc
    return in_order(sections)


def _workbook_tables(data: bytes) -> list[Section]:
    from openpyxl import load_workbook

    sections: list[Section] = []
    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        for sheet in workbook.worksheets:  # chart sheets are not worksheets
            sheet.reset_dimensions()  # a stale <dimension> would cut the rows short
            label, heading = f"sheet {sheet.title}", (sheet.title,)
            found = table_section(_sheet_rows(sheet), label=label, heading=heading)
            if found is not None:
                sections.append(found)
    finally:
        workbook.close()
    return sections


def _sheet_rows(sheet: Any) -> Iterator[tuple[int, list[str]]]:
    """(sheet row number, cells as shown). Cells rather than values only, for their number
    format; the read-only cells are made one row at a time, so memory stays flat."""
    for number, row in enumerate(sheet.iter_rows(), start=1):
        cells = [
            "" if cell.value is None else display_value(cell.value, cell.number_format)
            for cell in row
        ]
        yield number, cells


def display_value(value: object, number_format: str | None = None) -> str:
    """A cell's value as Excel shows it, as far as its number format is cheap to apply."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return _number(value, _parse_format(number_format or "General"))
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return f"{value.date().isoformat()} {_clock(value.time())}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return _clock(value)
    if isinstance(value, dt.timedelta):  # a duration format such as [h]:mm
        seconds = round(value.total_seconds())
        sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
        return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return "" if value is None else str(value)


def _clock(time: dt.time) -> str:
    return time.strftime("%H:%M:%S" if time.second or time.microsecond else "%H:%M")


@dataclass(frozen=True)
class _NumberFormat:
    decimals: int | None = None  # None: "General", as many digits as it takes (up to ten)
    optional_decimals: int = 0  # "0.0#": one decimal always, a second when not zero
    thousands: bool = False
    percent: bool = False


_LITERALS = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|[_*].')  # quoted text, [Red], \x, padding


@lru_cache(maxsize=512)
def _parse_format(number_format: str) -> _NumberFormat:
    """What of an Excel number format this reader applies: decimals, separators, percent.

    Only the first (positive) section counts; currency symbols and colours are left out, and
    scientific, fraction and text formats read as General.
    """
    core = _LITERALS.sub("", number_format.split(";", 1)[0]).strip()
    if not re.search(r"[0#]", core) or re.search(r"[eE][+-]|/|@", core):
        return _NumberFormat()
    fraction = re.search(r"\.([0#?]+)", core)
    digits = fraction.group(1) if fraction else ""
    return _NumberFormat(
        decimals=digits.count("0"),
        optional_decimals=len(digits) - digits.count("0"),
        thousands="#,##0" in core or bool(re.search(r"[0#],[0#]", core)),
        percent=core.endswith("%"),
    )


def _number(value: float, form: _NumberFormat) -> str:
    if form.percent:
        value = value * 100
    if form.decimals is None:
        if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
            text = str(int(value))
        else:
            text = f"{value:.10g}"  # 0.1 + 0.2 reads 0.3
    else:
        places = form.decimals + form.optional_decimals
        text = f"{value:{',' if form.thousands else ''}.{places}f}"
        if form.optional_decimals:
            text = _trim_optional(text, form)
    return f"{text}%" if form.percent else text


def _trim_optional(text: str, form: _NumberFormat) -> str:
    """Drop trailing zeros of the optional ("#") decimals, and a bare decimal point."""
    keep = len(text) - form.optional_decimals
    head, tail = text[:keep], text[keep:].rstrip("0")
    text = head + tail
    return text[:-1] if text.endswith(".") else text


def read_csv(data: bytes, context: ReadContext) -> list[Section]:
    text = decode_text(data)
    return _delimited(text, sniff_delimiter(text[:SNIFF_CHARS], len(text) > SNIFF_CHARS))


def read_tsv(data: bytes, context: ReadContext) -> list[Section]:
    return _delimited(decode_text(data), "\t")


def _delimited(text: str, delimiter: str) -> list[Section]:
    """The records as one table, numbered from 1 (a quoted field may span lines)."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        found = table_section(enumerate(reader, start=1))
    except csv.Error as exc:  # a field over the limit: an unclosed quote ran to the end
        raise DocumentError(f"malformed CSV (record {reader.line_num}: {exc})") from exc
    return [found] if found is not None else []


def sniff_delimiter(sample: str, truncated: bool = False) -> str:
    """The delimiter that splits the sample's records into the same number of fields most
    often (more than one field), "," when none does.

    Not ``csv.Sniffer``: its regular expressions take quadratic time on quotes it cannot pair
    (61 s on 64 KB of newline-quote pairs, 5 s on 13,000 lines of ``x,"y``). Here each
    candidate costs one pass of the C parser over the sample.
    """
    best, best_score = ",", 0.0
    for delimiter in DELIMITERS:
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
        try:
            counts = [len(record) for record in reader if record][:SNIFF_RECORDS]
        except csv.Error:
            continue
        if truncated and len(counts) > 1:
            counts.pop()  # the last record may be cut short by the sample's end
        if not counts:
            continue
        fields, agreeing = Counter(counts).most_common(1)[0]
        score = agreeing / len(counts) if fields > 1 else 0.0
        if score > best_score:
            best, best_score = delimiter, score
    return best
