"""Readers for document formats that need a parser: HTML, PDF, DOCX (one document per file) and
Parquet (one record per row).

Any parser failure becomes a reject naming the file and the parser's message: a corrupt PDF in a
folder of thousands must cost that one file, never the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from domaintune.data.records import Item, Reject, SourceContext, row_to_record
from domaintune.data.text_readers import document, too_large, whole_text_reader
from domaintune.extras import require

# Block-level tags end a line in the extracted text, so paragraphs and list items stay apart.
_HTML_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
                "section", "article", "table", "ul", "ol", "dd", "dt", "header", "footer", "title"}
_HTML_DROP = ("script", "style", "noscript", "template", "svg", "iframe")


def _unreadable(path: Path, ctx: SourceContext, kind: str, exc: Exception) -> Reject:
    return Reject(f"unreadable_{kind}", f"{kind} parser failed: {type(exc).__name__}: {exc}"[:500] +
                  "; re-export the file or remove it from the source", str(path), None, ctx.name)


def _checked(path: Path, ctx: SourceContext, text: str, steps: list[str]) -> Item:
    """The extracted text as a document, unless it is above max_record_bytes (binary containers
    are judged by their text: a 40 KB docx may hold one line)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > ctx.max_record_bytes:
        return too_large(path, ctx, None, size, text[:200].encode("utf-8", "replace"))
    return document(path, ctx, text, steps)


def html_to_text(html: str) -> str:
    """Visible text of a page: scripts/styles dropped, one line per block element."""
    require("lxml", "office", "format: html")
    import lxml.html
    from lxml import etree

    root = lxml.html.document_fromstring(html)
    etree.strip_elements(root, *_HTML_DROP, etree.Comment, with_tail=False)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _HTML_BLOCKS:
            el.tail = "\n" + (el.tail or "")
    return root.text_content()


def _html_document(path: Path, ctx: SourceContext, raw: str, steps: list[str]) -> Item:
    """The page's visible text as one document."""
    try:
        text = html_to_text(raw) if raw.strip() else ""
    except Exception as exc:  # lxml raises several types for broken markup
        return _unreadable(path, ctx, "html", exc)
    return document(path, ctx, text, [*steps, "extract.html"])


read_html = whole_text_reader(_html_document)


def read_pdf(path: Path, ctx: SourceContext) -> Iterator[Item]:
    PdfReader = require("pypdf", "office", "format: pdf").PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings repeat what the reject says
    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many types (PdfReadError, struct/zlib errors, ...)
        yield _unreadable(path, ctx, "pdf", exc)
        return
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        yield Reject("no_text", f"the PDF's {len(pages)} page(s) hold no text layer (scanned?); run OCR "
                     "first", str(path), None, ctx.name)
        return
    yield _checked(path, ctx, text, ["extract.pdf"])


def read_docx(path: Path, ctx: SourceContext) -> Iterator[Item]:
    docx = require("docx", "office", "format: docx")

    try:
        doc = docx.Document(str(path))
        parts = [p.text for p in doc.paragraphs]
        for table in doc.tables:
            parts += ["\t".join(cell.text for cell in row.cells) for row in table.rows]
    except Exception as exc:  # zipfile/lxml/KeyError on a damaged package
        yield _unreadable(path, ctx, "docx", exc)
        return
    yield _checked(path, ctx, "\n".join(parts), ["extract.docx"])


def read_parquet(path: Path, ctx: SourceContext) -> Iterator[Item]:
    """One record per row; `line` in the lineage is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        batches = table.iter_batches(batch_size=1024)
        row = 0
        for batch in batches:
            for values in batch.to_pylist():
                row += 1
                # Timestamps, decimals and bytes have no JSON form: keep their text in meta.
                values = json.loads(json.dumps(values, default=str))
                yield row_to_record(values, ctx, path, row, str(values)[:1000])
    except Exception as exc:  # ArrowInvalid / OSError on a truncated or foreign file
        yield _unreadable(path, ctx, "parquet", exc)
