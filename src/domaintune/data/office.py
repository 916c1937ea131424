"""Readers for document formats that need a parser: PDF, DOCX (one document per file) and Parquet
(one record per row). HTML has its own module (data/html.py).

Any parser failure becomes a reject naming the file and the parser's message: a corrupt PDF in a
folder of thousands must cost that one file, never the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from domaintune.data.records import Item, Reject, SourceContext, row_to_record
from domaintune.data.text_readers import document, too_large
from domaintune.extras import require


def unreadable(path: Path, ctx: SourceContext, kind: str, exc: Exception) -> Reject:
    return Reject(f"unreadable_{kind}", f"{kind} parser failed: {type(exc).__name__}: {exc}"[:500] +
                  "; re-export the file or remove it from the source", str(path), None, ctx.name)


def _checked(path: Path, ctx: SourceContext, text: str, steps: list[str]) -> Item:
    """The extracted text as a document, unless it is above max_record_bytes (binary containers
    are judged by their text: a 40 KB docx may hold one line)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > ctx.max_record_bytes:
        return too_large(path, ctx, None, size, text[:200].encode("utf-8", "replace"))
    return document(path, ctx, text, steps)


def read_pdf(path: Path, ctx: SourceContext) -> Iterator[Item]:
    PdfReader = require("pypdf", "office", "format: pdf").PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings repeat what the reject says
    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many types (PdfReadError, struct/zlib errors, ...)
        yield unreadable(path, ctx, "pdf", exc)
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
        yield unreadable(path, ctx, "docx", exc)
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
        yield unreadable(path, ctx, "parquet", exc)
