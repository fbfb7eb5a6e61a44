"""Mail and zip readers: members read as documents of their own, the caps checked first."""

from __future__ import annotations

import io
import struct
import time
import zipfile
from email.message import EmailMessage

import pytest

from rag.errors import DocumentError
from rag.ingest.readers import ContainerLimits, ReadContext, Section, Unreadable, parse_document


def pdf_bytes(*pages: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.cell(text=text)
    return bytes(pdf.output())


def mail(
    body: str = "Hello team,\nthe budget is attached.",
    subject: str = "Quarterly budget",
    html: str | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Alice Example <alice@example.com>"
    message["To"] = "team@example.com"
    message["Date"] = "Tue, 02 Jan 2024 10:00:00 +0000"
    if html is None:
        message.set_content(body)
    else:
        message.set_content(html, subtype="html")
    return message


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def read(data: bytes, kind: str, **limits: int | float) -> tuple[list[Section], ReadContext]:
    context = ReadContext(limits=ContainerLimits(**limits))  # type: ignore[arg-type]
    return parse_document(data, kind, context), context


def by_member(sections: list[Section]) -> dict[str, list[Section]]:
    found: dict[str, list[Section]] = {}
    for section in sections:
        found.setdefault(section.member, []).append(section)
    return found


# --- mail ------------------------------------------------------------------------------------


def test_mail_header_fields_and_plain_body_are_one_section_titled_by_its_subject() -> None:
    sections, _ = read(mail().as_bytes(), "eml")

    assert len(sections) == 1
    [section] = sections
    assert section.text.splitlines()[:4] == [
        "Subject: Quarterly budget",
        "From: Alice Example <alice@example.com>",
        "To: team@example.com",
        "Date: Tue, 02 Jan 2024 10:00:00 +0000",
    ]
    assert "the budget is attached." in section.text
    assert section.heading == ("Quarterly budget",)
    assert section.location == ""
    assert section.member == ""


def test_plain_text_body_is_preferred_over_its_html_alternative() -> None:
    message = mail(body="plain words")
    message.add_alternative("<p>html words</p>", subtype="html")

    [section] = read(message.as_bytes(), "eml")[0]

    assert "plain words" in section.text
    assert "html words" not in section.text


def test_html_only_mail_is_read_as_visible_text() -> None:
    html = "<html><head><style>p{color:red}</style></head><body><h1>Offer</h1><p>Buy &amp; save</p>"
    [section] = read(mail(html=html).as_bytes(), "eml")[0]

    assert "Offer\n" in section.text
    assert "Buy & save" in section.text
    assert "<p>" not in section.text
    assert "color:red" not in section.text


def test_pdf_attachment_is_read_with_its_name_as_member_and_its_pages_kept() -> None:
    message = mail()
    message.add_attachment(
        pdf_bytes("Revenue grew nine percent", "Costs fell two percent"),
        maintype="application",
        subtype="pdf",
        filename="report.pdf",
    )
    message.add_attachment(b"call notes: ship on Friday", "text", "plain", filename="notes.txt")

    sections, context = read(message.as_bytes(), "eml")
    members = by_member(sections)

    assert set(members) == {"", "report.pdf", "notes.txt"}
    pages = {s.page: s.text for s in members["report.pdf"]}
    assert "Revenue grew nine percent" in pages[1]
    assert "Costs fell two percent" in pages[2]
    assert "ship on Friday" in members["notes.txt"][0].text
    assert "report.pdf" not in members[""][0].text  # the body is not the attachments
    assert context.skipped == []


@pytest.mark.parametrize("encoded", [False, True], ids=["rfc822", "base64-encoded-rfc822"])
def test_attached_mail_attachments_are_named_by_their_path_through_it(encoded: bool) -> None:
    forwarded = mail(body="see the inner file", subject="Fwd")
    forwarded.add_attachment(
        pdf_bytes("Inner findings"), "application", "pdf", filename="inner.pdf"
    )
    outer = mail(body="forwarding")
    if encoded:  # what some mailers send, against RFC 2046
        outer.add_attachment(forwarded.as_bytes(), "message", "rfc822", filename="fwd.eml")
    else:
        outer.add_attachment(forwarded, filename="fwd.eml")

    members = by_member(read(outer.as_bytes(), "eml")[0])

    assert "see the inner file" in members["fwd.eml"][0].text
    assert members["fwd.eml"][0].heading == ("Fwd",)
    assert "Inner findings" in members["fwd.eml/inner.pdf"][0].text


def test_attachment_names_are_sanitised_and_made_unique() -> None:
    message = mail()
    for name in ("../../etc/evil.txt", "C:\\Users\\me\\notes.txt", "notes.txt", "...hidden.txt"):
        message.add_attachment(f"text of {name}".encode(), "text", "plain", filename=name)
    message.add_attachment(b"nameless text", "text", "plain", disposition="attachment")

    members = by_member(read(message.as_bytes(), "eml")[0])

    assert set(members) == {
        "",
        "evil.txt",
        "notes.txt",
        "notes (2).txt",
        "hidden.txt",
        "attachment-5.txt",
    }
    assert "evil.txt" in members["evil.txt"][0].text


def test_attachment_that_is_not_a_document_is_recorded_as_skipped() -> None:
    message = mail()
    message.add_attachment(b"MZ\x90\x00binary", "application", "octet-stream", filename="tool.exe")

    sections, context = read(message.as_bytes(), "eml")

    assert [s.member for s in sections] == [""]
    assert context.skipped == [("tool.exe", "not a document type")]


def test_mail_with_500_attachments_reads_only_max_members_and_finishes_fast() -> None:
    message = mail()
    for number in range(500):
        message.add_attachment(
            f"note {number}".encode(), "text", "plain", filename=f"n{number}.txt"
        )
    data = message.as_bytes()

    started = time.monotonic()
    sections, context = read(data, "eml", max_members=10)
    elapsed = time.monotonic() - started

    assert [s.member for s in sections[1:]] == [f"n{n}.txt" for n in range(10)]
    assert len(context.skipped) == 490
    assert context.skipped[0] == ("n10.txt", "archive over its limits (more than 10 attachments)")
    assert elapsed < 10


def test_attachments_over_the_total_byte_cap_are_skipped() -> None:
    message = mail()
    message.add_attachment(b"small one", "text", "plain", filename="small.txt")
    message.add_attachment(b"x" * 5000, "text", "plain", filename="large.txt")

    sections, context = read(message.as_bytes(), "eml", max_total_bytes=1000)

    assert [s.member for s in sections] == ["", "small.txt"]
    assert context.skipped == [
        ("large.txt", "archive over its limits (attachments over 1000 bytes)")
    ]


def test_unknown_body_charset_falls_back_to_detection() -> None:
    data = (
        b"Subject: menu\r\nFrom: chef@example.com\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
        b"cr\xe8me br\xfbl\xe9e tonight\r\n"
    )
    [section] = read(data, "eml")[0]

    assert "crème brûlée tonight" in section.text


def test_broken_mime_is_read_as_far_as_the_parser_recovers() -> None:
    data = (
        b"Subject: broken\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
        b"--XYZ\r\nContent-Type: text/plain\r\n\r\nthe part that survived\r\n"
        b"--XYZ\r\nContent-Type: application/pdf; name=cut.pdf\r\n"
        b"Content-Disposition: attachment; filename=cut.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK%%%"
    )
    sections, context = read(data, "eml")

    assert "the part that survived" in sections[0].text
    assert [name for name, _ in context.skipped] == ["cut.pdf"]


def test_file_that_is_not_a_mail_fails() -> None:
    with pytest.raises(DocumentError, match="not an email message"):
        read(b"\x00\x01\x02 just some binary junk without headers", "eml")


def test_zip_attached_to_a_mail_is_read_one_level_deeper() -> None:
    message = mail()
    message.add_attachment(
        zip_bytes({"notes/a.md": b"# Plan\nShip it."}), "application", "zip", filename="x.zip"
    )

    members = by_member(read(message.as_bytes(), "eml")[0])

    assert "Ship it." in members["x.zip/notes/a.md"][0].text


# --- zip -------------------------------------------------------------------------------------


def test_markdown_notes_in_a_zip_keep_their_member_path_and_heading_path() -> None:
    data = zip_bytes(
        {
            "notes/": b"",
            "notes/a.md": b"# Project\n\n## Risks\n\nThe supplier may be late.\n",
            "readme.txt": b"An archive of notes.",
        }
    )
    sections, context = read(data, "zip")

    assert [s.member for s in sections] == ["notes/a.md"] * len(sections[:-1]) + ["readme.txt"]
    risks = next(s for s in sections if "supplier" in s.text)
    assert risks.member == "notes/a.md"
    assert risks.heading == ("Project", "Risks")
    assert context.skipped == []  # a directory entry is no member to report


def test_zip_bomb_is_refused_from_its_headers_before_extraction() -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.txt", "w") as member,
    ):
        chunk = bytes(1 << 20)
        for _ in range(20):  # 20 MB of zeros, about 20 KB compressed: a ratio near 1000
            member.write(chunk)
    data = buffer.getvalue()
    assert len(data) < 100_000

    with pytest.raises(Unreadable, match=r"archive over its limits \(zeros\.txt expands \d+ times"):
        read(data, "zip")
    with pytest.raises(Unreadable, match="archive over its limits .* bytes uncompressed"):
        read(data, "zip", max_total_bytes=10_000_000, max_ratio=10_000)


def test_zip_with_too_many_members_is_refused() -> None:
    data = zip_bytes({f"n{number}.txt": b"note" for number in range(30)})

    with pytest.raises(Unreadable, match=r"archive over its limits \(more than 20 members\)"):
        read(data, "zip", max_members=20)


def test_archives_nested_deeper_than_max_depth_are_recorded_not_read() -> None:
    deepest = zip_bytes({"d.md": b"fourth level"})
    inner = zip_bytes({"c.md": b"third level", "deepest.zip": deepest})
    middle = zip_bytes({"b.md": b"second level", "inner.zip": inner})
    outer = zip_bytes({"a.md": b"first level", "mid.zip": middle})

    sections, context = read(outer, "zip", max_depth=2)

    assert [(s.member, s.text.strip()) for s in sections] == [
        ("a.md", "first level"),
        ("mid.zip/b.md", "second level"),
        ("mid.zip/inner.zip/c.md", "third level"),
    ]
    skipped = dict(context.skipped)
    deepest_member = "mid.zip/inner.zip/deepest.zip/d.md"
    assert skipped[deepest_member] == "archive over its limits (nested deeper than 2)"
    assert "nested deeper than 2" in skipped["mid.zip/inner.zip/deepest.zip"]


def _set_encrypted_flag(data: bytes) -> bytes:
    """zipfile cannot write encrypted members: set bit 0 of the general purpose flags in every
    local header (offset 6) and central directory entry (offset 8)."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = patched.find(signature)
        while at >= 0:
            (flags,) = struct.unpack_from("<H", patched, at + offset)
            struct.pack_into("<H", patched, at + offset, flags | 0x1)
            at = patched.find(signature, at + 4)
    return bytes(patched)


def test_zip_whose_members_are_all_encrypted_is_skipped_as_password_protected() -> None:
    data = _set_encrypted_flag(
        zip_bytes({"secret.md": b"# Secret", "plan.txt": b"plan"}, zipfile.ZIP_STORED)
    )

    with pytest.raises(Unreadable, match=r"^password-protected zip archive$"):
        read(data, "zip")


def test_encrypted_member_among_readable_ones_is_recorded_as_skipped() -> None:
    locked = _set_encrypted_flag(zip_bytes({"secret.md": b"# Secret"}, zipfile.ZIP_STORED))
    outer = zip_bytes({"open.md": b"open text", "locked.zip": locked})
    sections, context = read(outer, "zip")

    assert [s.member for s in sections] == ["open.md"]
    assert ("locked.zip", "password-protected zip archive") in context.skipped


def test_member_that_points_outside_the_archive_is_recorded_and_never_read() -> None:
    data = zip_bytes(
        {
            "../../etc/evil.md": b"# Evil\nshould never be read",
            "/abs/path.md": b"absolute",
            "ok.md": b"fine text",
        }
    )
    sections, context = read(data, "zip")

    assert [s.member for s in sections] == ["ok.md"]
    assert all("never be read" not in s.text for s in sections)
    assert context.skipped == [
        ("../../etc/evil.md", "unsafe member name (it points outside the archive)"),
        ("/abs/path.md", "unsafe member name (an absolute path)"),
    ]


def test_hidden_files_and_macos_metadata_are_recorded_as_skipped() -> None:
    data = zip_bytes(
        {
            "__MACOSX/._a.md": b"resource fork",
            ".git/config.txt": b"hidden",
            "notes/.draft.md": b"hidden too",
            "a.md": b"visible",
        }
    )
    sections, context = read(data, "zip")

    assert [s.member for s in sections] == ["a.md"]
    assert [why for _, why in context.skipped] == [
        "macOS metadata (__MACOSX)",
        "hidden file",
        "hidden file",
    ]


def test_member_with_unsupported_compression_is_skipped_with_the_method() -> None:
    data = bytearray(zip_bytes({"odd.md": b"odd", "fine.md": b"fine"}, zipfile.ZIP_STORED))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, local + 8, 9)  # deflate64, which zipfile does not read
    struct.pack_into("<H", data, central + 10, 9)
    sections, context = read(bytes(data), "zip")

    assert [s.member for s in sections] == ["fine.md"]
    assert context.skipped == [("odd.md", "unsupported zip compression (deflate64)")]


def test_header_understating_a_size_never_yields_more_than_it_says() -> None:
    data = bytearray(zip_bytes({"liar.txt": b"hello world " * 100_000, "ok.md": b"fine"}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 1000)  # uncompressed size: 1000, not 1,200,000
    struct.pack_into("<I", data, central + 24, 1000)
    sections, context = read(bytes(data), "zip")

    assert [s.member for s in sections] == ["ok.md"]
    [(name, why)] = context.skipped
    assert name == "liar.txt"
    assert why.startswith("damaged zip member (Bad CRC-32")


def test_zip_of_no_documents_is_skipped_with_the_first_reason() -> None:
    data = zip_bytes({"tool.exe": b"MZ", "lib.dll": b"MZ"})

    with pytest.raises(
        Unreadable, match=r"no readable member .*\(tool\.exe: not a document type, and 1 more\)"
    ):
        read(data, "zip")


def test_truncated_zip_fails_as_damaged() -> None:
    data = zip_bytes({"a.md": b"# Title\n" + b"words " * 2000})

    with pytest.raises(DocumentError, match="damaged zip archive") as raised:
        read(data[: len(data) // 2], "zip")
    assert not isinstance(raised.value, Unreadable)
