"""Which reader reads a file: the format registry and `read_file`, the one entry point.

Readers are registered by name in a lazy `Registry` ("module:function" strings, imported on first
use), so the heavy parsers (lxml, pypdf, python-docx, pyarrow) load only when a source needs them
and no reader module has to import this one's neighbours. A reader yields a `Record` or a `Reject`
per row and never raises for bad content; only an unreadable file (permissions, I/O) is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from domaintune.data.records import Item, Reader, Reject, SourceContext
from domaintune.errors import DataError
from domaintune.registry import Registry

# Which reader `format: auto` uses for a file, by its (lower-cased) extension.
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".md": "md",
              ".markdown": "md", ".csv": "csv", ".html": "html", ".htm": "html", ".pdf": "pdf",
              ".docx": "docx", ".parquet": "parquet"}

READERS: Registry[Reader] = Registry("reader")
for _name, _target in {
    "jsonl": "domaintune.data.text_readers:read_jsonl",
    "txt": "domaintune.data.text_readers:read_document",
    "md": "domaintune.data.text_readers:read_document",
    "csv": "domaintune.data.text_readers:read_csv",
    "html": "domaintune.data.office:read_html",
    "pdf": "domaintune.data.office:read_pdf",
    "docx": "domaintune.data.office:read_docx",
    "parquet": "domaintune.data.office:read_parquet",
    "chat": "domaintune.data.chat:read_chat",
}.items():
    READERS.register(_name, _target)


def detect_format(path: Path, fmt: str) -> str | None:
    """The reader to use for `path`; None if `format: auto` does not know the extension."""
    return EXTENSIONS.get(path.suffix.lower()) if fmt == "auto" else fmt


def read_file(path: Path, ctx: SourceContext) -> Iterator[Item]:
    """Read one file of a source with the reader its format (or extension) selects."""
    fmt = detect_format(path, ctx.fmt)
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        yield Reject("unsupported_format",
                     f"no reader for extension '{path.suffix}' (known: {known}); set format in "
                     f"{ctx.key} or remove the file from the source", str(path), None, ctx.name)
        return
    reader = READERS.get(fmt)
    try:
        yield from reader(path, ctx)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({ctx.key}.path): {exc}") from exc
