"""EPUB: the chapters in reading order (the package's spine), each through the HTML scanner.

META-INF/container.xml names the package document (OPF); its manifest maps ids to files and its
spine lists them in reading order. The XML of the container and the OPF is parsed with
defusedxml; the chapters' XHTML is never parsed as XML but read by the linear HTML scanner, so
a chapter declaring entities expands nothing. A book whose chapters are encrypted (Adobe ADEPT,
Apple FairPlay, Readium LCP) is skipped as DRM-protected; obfuscated fonts alone are no DRM.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from urllib.parse import unquote

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, Unreadable, in_order
from rag.ingest.readers.html import html_text
from rag.ingest.readers.packages import open_package, package_member
from rag.ingest.readers.text import decode_text
from rag.ingest.readers.xmlsafe import local_name, parse_xml

DAMAGED = "damaged EPUB"
# Font obfuscation (IDPF, Adobe) is not encryption of the text.
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
_CHAPTER_TYPES = {"application/xhtml+xml", "text/html", "text/x-oeb1-document"}
# The start of a heading or title tag: a fixed-length match, so the search stays linear.
_TITLE_TAG = (re.compile(r"<(h[12])[\s/>]", re.IGNORECASE), re.compile(r"<(title)[\s/>]", re.I))
_MAX_TITLE_CHARS = 1000


@dataclass(frozen=True)
class _Package:
    title: str
    chapters: list[tuple[str, str]]  # (path in the zip, media type), in reading order


def read(data: bytes, context: ReadContext) -> list[Section]:
    """One section per chapter with text: location ``chapter N`` (N counts those chapters),
    heading the chapter's first h1/h2 or its title, else the book's title."""
    archive = open_package(data, DAMAGED)
    package = _package(archive)
    encrypted = _encrypted(archive)
    if any(path in encrypted for path, _ in package.chapters):
        raise Unreadable("DRM-protected EPUB")
    paths = {path for path, _ in package.chapters}
    if sum(i.file_size for i in archive.infolist() if i.filename in paths) > (
        context.limits.max_total_bytes
    ):
        limit = context.limits.max_total_bytes
        raise DocumentError(f"archive over its limits (chapters over {limit:,} bytes in all)")
    sections: list[Section] = []
    for path, media_type in package.chapters:
        if media_type not in _CHAPTER_TYPES:
            continue  # an image or SVG page in the spine
        content = package_member(archive, path, DAMAGED)
        if content is None:
            context.skipped.append((path, "missing from the EPUB"))
            continue
        try:
            markup = decode_text(content)
        except DocumentError as exc:
            context.skipped.append((path, str(exc)))
            continue
        text = html_text(markup)
        if text:
            title = _chapter_title(markup) or package.title
            where = f"chapter {len(sections) + 1}"
            sections.append(Section(text=text, heading=(title,) if title else (), location=where))
    return in_order(sections)


def _package(archive: zipfile.ZipFile) -> _Package:
    opf_path = _rootfile(archive)
    content = package_member(archive, opf_path, DAMAGED)
    if content is None:
        raise DocumentError(f"{DAMAGED} (its package document {opf_path} is missing)")
    root = parse_xml(content, DAMAGED, member=opf_path)
    base = posixpath.dirname(opf_path)
    title, items, order = "", {}, []
    for element in root.iter():
        name = local_name(element.tag)
        if name == "title" and not title:
            title = " ".join("".join(element.itertext()).split())
        elif name == "item" and element.get("id") and element.get("href"):
            href = unquote(element.get("href", "").split("#")[0])
            path = posixpath.normpath(posixpath.join(base, href))
            items[element.get("id", "")] = (path, element.get("media-type", "").strip().lower())
        elif name == "itemref":
            order.append(element.get("idref", ""))
    if not order:
        raise DocumentError(f"{DAMAGED} ({opf_path} has no spine)")
    return _Package(title=title, chapters=[items[i] for i in order if i in items])


def _rootfile(archive: zipfile.ZipFile) -> str:
    """The OPF that META-INF/container.xml names, else the only .opf of the archive."""
    container = package_member(archive, "META-INF/container.xml", DAMAGED)
    if container is not None:
        root = parse_xml(container, DAMAGED, member="META-INF/container.xml")
        for element in root.iter():
            if local_name(element.tag) == "rootfile" and element.get("full-path"):
                return posixpath.normpath(unquote(element.get("full-path", "")))
        raise DocumentError(f"{DAMAGED} (META-INF/container.xml names no package document)")
    found = [n for n in archive.namelist() if n.lower().endswith(".opf")]
    if len(found) != 1:
        raise DocumentError(f"{DAMAGED} (no META-INF/container.xml)")
    return found[0]


def _encrypted(archive: zipfile.ZipFile) -> set[str]:
    """Paths that META-INF/encryption.xml lists as encrypted by anything but font obfuscation
    (its URIs are relative to the root of the archive)."""
    listing = package_member(archive, "META-INF/encryption.xml", DAMAGED)
    if listing is None:
        return set()
    root = parse_xml(listing, DAMAGED, member="META-INF/encryption.xml")
    paths: set[str] = set()
    for data in root.iter():
        if local_name(data.tag) != "EncryptedData":
            continue
        methods = [e.get("Algorithm", "") for e in data.iter() if "Method" in local_name(e.tag)]
        if methods and all(m in _FONT_OBFUSCATION for m in methods):
            continue
        for ref in data.iter():
            if local_name(ref.tag) == "CipherReference" and ref.get("URI"):
                paths.add(posixpath.normpath(unquote(ref.get("URI", "")).lstrip("/")))
    return paths


def _chapter_title(markup: str) -> str:
    """The text of the chapter's first h1 or h2, else of its title element."""
    for tag in _TITLE_TAG:
        start = tag.search(markup)
        if start is None:
            continue
        closing = re.compile(f"</{start.group(1)}", re.IGNORECASE).search(markup, start.end())
        end = closing.start() if closing else len(markup)
        inner = markup[start.start() : min(end, start.end() + _MAX_TITLE_CHARS)]
        title = " ".join(html_text(f"<div>{inner[inner.find('>') + 1 :]}</div>").split())
        if title:
            return title
    return ""
