"""E-mail (.eml): the header block and body as one section, each attachment as a member.

The body is the text/plain part when the mail has one, else its text/html part as visible
text. Attachments are read as documents of their own through ``context.read_member``, so a
PDF attached as ``report.pdf`` gives sections with ``member="report.pdf"`` and an attached
mail's own attachments ``"fwd.eml/inner.pdf"``. MIME has no compression, so no attachment
decodes to much more than the mail's own size; the caps still bound how many are read.
"""

from __future__ import annotations

import base64
import quopri
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section
from rag.ingest.readers.containers import read_member_sections
from rag.ingest.readers.html import html_text
from rag.ingest.readers.text import decode_text

if TYPE_CHECKING:  # the email package is imported when a mail is read, not with the registry
    from email.message import EmailMessage, Message
    from email.policy import EmailPolicy

_HEADER_LINES = ("Subject", "From", "To", "Cc", "Date")
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})
_MAX_HEADER_CHARS = 2_000
_MAX_ADDRESS_CHARS = 16_000

# A nameless attachment gets a suffix from its type, so the registry knows how to read it.
_SUFFIX_OF_TYPE = {
    "message/rfc822": ".eml",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/markdown": ".md",
    "text/csv": ".csv",
    "application/zip": ".zip",
    "application/rtf": ".rtf",
    "text/rtf": ".rtf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}


def read(data: bytes, context: ReadContext) -> list[Section]:
    from email.message import EmailMessage
    from email.parser import BytesParser

    try:
        message = BytesParser(policy=_bounded_policy()).parsebytes(data)
    except Exception as exc:  # the parser recovers from nearly anything; be safe regardless
        raise DocumentError(f"damaged email message ({exc})") from exc
    if not isinstance(message, EmailMessage) or not message.keys():
        raise DocumentError("not an email message")
    body_part = _body_part(message)
    subject = _header(message, "Subject")
    lines = [f"{name}: {value}" for name in _HEADER_LINES if (value := _header(message, name))]
    body = _part_text(body_part) if body_part is not None else ""
    text = "\n".join(lines) + ("\n\n" + body if body else "")
    sections = [Section(text=text, heading=(subject,) if subject else ())]
    sections.extend(_attachments(message, body_part, context))
    return sections


def _bounded_policy() -> EmailPolicy:
    """``email.policy.default`` with each header value cut before it is parsed.

    The structured header parser takes time quadratic in a value's length (a Subject of
    20,000 encoded words took 21 s); no real Content-* value or Subject needs more than 2,000
    characters, and address lists are allowed 16,000."""
    from email.policy import EmailPolicy

    class BoundedPolicy(EmailPolicy):
        def header_fetch_parse(self, name: str, value: str) -> Any:
            limit = _MAX_ADDRESS_CHARS if name.lower() in _ADDRESS_HEADERS else _MAX_HEADER_CHARS
            return super().header_fetch_parse(name, value[:limit])

    return BoundedPolicy()


def _body_part(message: EmailMessage) -> EmailMessage | None:
    """The text/plain body when there is one, else the text/html one (never an attachment)."""
    from email.message import EmailMessage

    for preference in ("plain", "html"):
        try:
            part = message.get_body(preferencelist=(preference,))
        except Exception:  # a malformed structure: read what the parser made of it
            part = None
        if isinstance(part, EmailMessage) and part.get_filename() is None:
            return part
    return None


def _part_text(part: EmailMessage) -> str:
    """A text part decoded with its charset; an unknown charset falls back to detection."""
    try:
        content = part.get_content()
        text = content if isinstance(content, str) else ""
    except Exception:  # LookupError for an unknown charset, others for broken parts
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        try:
            text = decode_text(raw)
        except DocumentError:
            text = raw.decode("latin-1")
    text = _clean(text).replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        return html_text(text)
    return text.strip()


def _header(message: Message, name: str) -> str:
    """A header's decoded value on one line; "" when absent or beyond repair."""
    try:
        value = message.get(name)
        text = "" if value is None else str(value)
    except Exception:  # the header registry raises on some hostile values: use the raw one
        text = next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), "")
    return " ".join(_clean(text).split())


def _clean(text: str) -> str:
    """Lone surrogates (undecodable bytes the parser kept) become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _leaves(message: Message) -> Iterator[Message]:
    """The leaf parts in order; an attached mail (message/rfc822) is a leaf, read as a member.
    Iterative, so multiparts nested thousands deep do not exhaust the stack."""
    from email.message import Message

    stack: list[Message] = [message]
    while stack:
        part = stack.pop()
        if part.get_content_type() == "message/rfc822" or not part.is_multipart():
            yield part
            continue
        payload = part.get_payload()
        children = (
            [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
        )
        stack.extend(reversed(children))


def _is_attachment(part: Message, body_part: Message | None) -> bool:
    """A part with a filename, or marked as an attachment, or an attached mail."""
    if part is body_part:
        return False
    try:
        if part.get_content_type() == "message/rfc822":
            return True
        return part.get_filename() is not None or part.get_content_disposition() == "attachment"
    except Exception:  # headers beyond the parser's repair: not an attachment we can name
        return False


def _attachments(
    message: EmailMessage, body_part: Message | None, context: ReadContext
) -> list[Section]:
    limits = context.limits
    sections: list[Section] = []
    names: dict[str, int] = {}
    total = 0
    found = [p for p in _leaves(message) if p is not message and _is_attachment(p, body_part)]
    for number, part in enumerate(found, start=1):
        name = _unique(_attachment_name(part, number), names)
        if number > limits.max_members:
            reason = f"archive over its limits (more than {limits.max_members} attachments)"
            context.skipped.append((name, reason))
            continue
        payload = _payload(part)
        if payload is None:
            context.skipped.append((name, "damaged attachment (cannot be decoded)"))
            continue
        total += len(payload)
        if total > limits.max_total_bytes:
            total -= len(payload)
            reason = f"archive over its limits (attachments over {limits.max_total_bytes} bytes)"
            context.skipped.append((name, reason))
            continue
        read, _ = read_member_sections(context, name, payload)
        sections.extend(read)
        context.heartbeat()
    return sections


def _payload(part: Message) -> bytes | None:
    """An attachment's decoded bytes; an attached mail as its serialised message.

    Some mailers base64-encode an attached mail (RFC 2046 forbids it); the parser then reads
    the encoded lines as a headerless message, whose text is decoded here."""
    from email.message import Message

    try:
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if not isinstance(inner, Message):
                return None
            raw = inner.as_bytes()
            encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
            if encoding == "base64":
                return base64.b64decode(raw)  # line breaks and stray characters are dropped
            if encoding == "quoted-printable":
                return quopri.decodestring(raw)
            return raw
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding or an unserialisable inner mail
        return None
    return payload if isinstance(payload, bytes) else None


def _attachment_name(part: Message, number: int) -> str:
    """The filename's last path part, without NULs or leading dots; "attachment-N" (with a
    suffix from its content type) when there is none left."""
    try:
        raw = part.get_filename() or ""
    except Exception:
        raw = ""
    name = re.split(r"[/\\]", _clean(raw).replace("\x00", ""))[-1]
    name = " ".join(name.split()).lstrip(".").strip()
    if not name:
        name = f"attachment-{number}{_SUFFIX_OF_TYPE.get(part.get_content_type(), '')}"
    return name


def _unique(name: str, taken: dict[str, int]) -> str:
    """``name``, or ``name (2)``, ``name (3)``… before the suffix when it is taken. ``taken``
    counts the uses of each name, so 10,000 attachments of one name cost no quadratic search."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    candidate = name
    while candidate in taken:
        taken[name] += 1
        count = taken[name]
        candidate = f"{stem} ({count}).{suffix}" if suffix else f"{stem} ({count})"
    taken[candidate] = taken.get(candidate, 1)
    return candidate
