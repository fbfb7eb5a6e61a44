"""A messy shared drive, made on the spot: one entry of every kind that has taken ingest down."""

from __future__ import annotations

import codecs
import os
import random
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.documents import write_encrypted_pdf, write_pdf, write_truncated_pdf

NON_UTF8_NAME = b"bad-\xff-bytes.txt"
GOOD_FACTS = {
    "good.md": "The orchard cooperative ships quince marmalade every October.",
    "good.pdf": "The lighthouse keeper logs the fog horn hours in a green ledger.",
    "x.pdf/inside.md": "A folder named like a PDF holds the tram timetable for Lisbon.",
    "latin1.txt": "Caf\xe9 cr\xe8me br\xfbl\xe9e costs four pounds at the harbour kiosk.",
    "utf16.txt": "The glacier survey counted nineteen crevasses near the hut.",
    "nested.html": "The deepest div names the falconry club's winter meeting place.",
    "norun.md": "Beyond the unreadable run, the bakery opens at half past six.",
    NON_UTF8_NAME.decode("latin-1"): "The non-UTF-8 file remembers the saffron harvest.",
}


def write_endless_pdf(path: Path, pages: int = 4000, operators: int = 12000) -> Path:
    """A small PDF whose text extraction practically never ends: every page draws the same
    content stream of ``operators`` text operators (a few hundred KB on disk, hours to parse)."""
    ops = b"BT /F1 9 Tf " + b" ".join(b"1 0 Td (w%d) Tj" % i for i in range(operators)) + b" ET"
    stream = zlib.compress(ops, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    )
    objects += [page] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


@dataclass
class HostileFolder:
    root: Path
    good: dict[str, str]  # relative path (as the report shows it) -> a sentence in it
    skipped: set[str] = field(default_factory=set)  # relative paths skipped with a reason
    failed: set[str] = field(default_factory=set)  # relative paths failed with a reason
    endless: str = "0-endless.pdf"  # sorts first: the first file a single worker takes


def build_hostile_folder(root: Path, big_file_bytes: int) -> HostileFolder:
    """Every class of entry from the messy-drive report, plus good files among them."""
    root.mkdir(parents=True)
    rng = random.Random(8)
    good = dict(GOOD_FACTS)
    for name, text in GOOD_FACTS.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "good.pdf":
            write_pdf(target, [text])
        elif name == "latin1.txt":
            target.write_bytes(text.encode("cp1252"))
        elif name == "utf16.txt":
            target.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
        elif name == "nested.html":
            depth = 200_000
            target.write_text(
                "<html><body>" + "<div>" * depth + f"<p>{text}</p>" + "</div>" * depth
            )
        elif name == "norun.md":
            run = "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(2_000_000)
            )
            target.write_text(f"# Notes\n\n{run}\n\n{text}\n")
        elif name.startswith("bad-"):
            with open(os.path.join(os.fsencode(root), NON_UTF8_NAME), "w") as f:
                f.write(text)
        else:
            target.write_text(text)
    good = {
        (r"bad-\xff-bytes.txt" if name.startswith("bad-") else name): text
        for name, text in good.items()
    }
    os.symlink("/dev/zero", root / "endless.txt")
    os.mkfifo(root / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.md"))
    sock.close()
    write_truncated_pdf(root / "truncated.pdf", "This PDF was cut short. " * 40)
    write_encrypted_pdf(root / "locked.pdf", "Secret board minutes.")
    (root / "garbage.pdf").write_bytes(rng.randbytes(5000))
    (root / "empty.pdf").write_bytes(b"")
    (root / "binary.md").write_bytes(b"\x00\x01\x02" + rng.randbytes(4000))
    os.symlink("loop-b.md", root / "loop-a.md")
    os.symlink("loop-a.md", root / "loop-b.md")
    os.symlink("missing-target.md", root / "dangling.md")
    (root / ".hidden.md").write_text("hidden notes are not ingested")
    (root / "big.txt").write_bytes(b"word " * (big_file_bytes // 5))
    write_endless_pdf(root / "0-endless.pdf")
    return HostileFolder(
        root,
        good,
        skipped={"endless.txt", "pipe.txt", "sock.md", ".hidden.md", "big.txt", "locked.pdf"},
        failed={
            "truncated.pdf",
            "garbage.pdf",
            "empty.pdf",
            "binary.md",
            "loop-a.md",
            "loop-b.md",
            "dangling.md",
            "0-endless.pdf",
        },
    )
