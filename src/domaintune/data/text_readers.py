"""Readers for text formats: JSONL, CSV (one record per row), plain text and Markdown (one document
per file), and the helpers the other readers share (decoding a whole file, the size limit).

Each yields a `Record` or a `Reject` per row, never raising for bad content: bad bytes, broken JSON
and odd rows become rejects with a reason, so one bad line never costs a whole corpus. Only an
unreadable file (permissions, I/O) is an error (raised by `readers.read_file`), because no amount
of quarantining fixes that.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from domaintune.data.decode import DecodeError, decode_document, detect_encoding
from domaintune.data.records import (
    Item,
    Reader,
    Record,
    Reject,
    SourceContext,
    excerpt,
    has_surrogates,
    row_to_record,
)

_BOM = b"\xef\xbb\xbf"
EXCERPT_BYTES = 800
# A JSON escape of a UTF-16 surrogate: valid pairs are fine, lone ones cannot be written as UTF-8.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _invalid_utf8(path: Path, ctx: SourceContext, line: int | None, data: bytes,
                  exc: UnicodeDecodeError) -> Reject:
    where = f"byte {exc.start} of the line" if line is not None else f"byte {exc.start}"
    detail = (f"{where} (0x{data[exc.start]:02x}) is not valid UTF-8; re-encode the file as UTF-8 "
              "(e.g. iconv -f LATIN1 -t UTF-8)")
    return Reject("invalid_utf8", detail, str(path), line, ctx.name,
                  excerpt(data.decode("utf-8", "replace").strip()))


def read_jsonl(path: Path, ctx: SourceContext) -> Iterator[Item]:
    """One JSON object per line; blank lines are layout, not records, and are skipped."""
    with path.open("rb") as fh:
        for lineno, data in enumerate(fh, start=1):
            if lineno == 1 and data.startswith(_BOM):
                data = data[len(_BOM):]
            if not data.strip():
                continue
            if len(data) > ctx.max_record_bytes:
                yield too_large(path, ctx, lineno, len(data), data[:EXCERPT_BYTES])
                continue
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _invalid_utf8(path, ctx, lineno, data, exc)
                continue
            yield _parse_json_line(line, path, ctx, lineno)


def _parse_json_line(line: str, path: Path, ctx: SourceContext, lineno: int) -> Item:
    def reject(reason: str, detail: str) -> Reject:
        return Reject(reason, detail, str(path), lineno, ctx.name, excerpt(line.strip()))

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(line.rstrip()) or exc.msg.startswith("Unterminated")
        hint = "; the line looks truncated" if truncated else ""
        return reject("bad_json", f"{exc.msg} (column {exc.colno}){hint}")
    except RecursionError:
        return reject("bad_json", "nested too deeply to parse")
    if _ESCAPED_SURROGATE.search(line) and has_surrogates(json.dumps(row, ensure_ascii=False)):
        return reject("invalid_utf8", "a \\uD800-\\uDFFF escape is not part of a surrogate pair, "
                                      "so the text cannot be written as UTF-8; fix the producer")
    return row_to_record(row, ctx, path, lineno, line)


def too_large(path: Path, ctx: SourceContext, line: int | None, size: int, head: bytes) -> Reject:
    return Reject("too_large", f"{size:,} bytes, above data.max_record_bytes={ctx.max_record_bytes:,}; split "
                  "the document or raise the limit", str(path), line, ctx.name,
                  excerpt(head.decode("utf-8", "replace")))


def read_text_file(path: Path, ctx: SourceContext) -> tuple[str, list[str]] | Reject:
    """The whole file as text (decoded per the source's encoding), or why it cannot be."""
    size = path.stat().st_size
    if size > ctx.max_record_bytes:
        with path.open("rb") as fh:
            return too_large(path, ctx, None, size, fh.read(EXCERPT_BYTES))
    data = path.read_bytes()
    try:
        text, codec = decode_document(data, ctx.encoding)
    except DecodeError as err:
        return Reject(err.reason, err.detail, str(path), None, ctx.name,
                      excerpt(data[:EXCERPT_BYTES].decode("utf-8", "replace").strip()))
    return text, ([f"decode.{codec}"] if codec else [])


def whole_text_reader(convert: Callable[[Path, SourceContext, str, list[str]], Item]) -> Reader:
    """A reader for formats whose whole file is text: `convert(path, ctx, text, steps)` turns the
    decoded file into the item; a file that cannot be decoded (or is too large) passes on as its Reject."""
    def reader(path: Path, ctx: SourceContext) -> Iterator[Item]:
        got = read_text_file(path, ctx)
        yield got if isinstance(got, Reject) else convert(path, ctx, *got)

    reader.__doc__ = convert.__doc__
    return reader


def document(path: Path, ctx: SourceContext, text: str, steps: list[str]) -> Record:
    """The whole file as one document (line is None in its lineage)."""
    return Record(ctx.derived_id(path, None), text, ctx.stream, ctx.name, str(path), None, steps)


read_document = whole_text_reader(document)  # txt / md


def read_csv(path: Path, ctx: SourceContext) -> Iterator[Item]:
    """A header row names the columns; text_field / id_field pick the text and id columns."""
    # Long documents in one cell exceed csv's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    # surrogateescape keeps undecodable bytes so that only the rows holding them are rejected.
    encoding = "utf-8-sig" if ctx.encoding in ("utf-8", "utf8") else ctx.encoding
    if encoding == "auto":
        with path.open("rb") as fh:
            encoding = detect_encoding(fh.read(1 << 20))
    with path.open("r", encoding=encoding, errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        end = 0
        while True:
            start = end + 1
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                yield Reject("bad_csv", f"{exc}; the rest of the file was not read", str(path),
                             start, ctx.name)
                return
            end = reader.line_num
            if cells is None:
                return
            if not cells:
                continue  # blank line
            if header is None:
                header = cells
                continue
            yield _csv_row(header, cells, path, ctx, start)


def _csv_row(header: list[str], cells: list[str], path: Path, ctx: SourceContext,
             line: int) -> Item:
    raw = ",".join(cells)
    if any(has_surrogates(c) for c in cells):
        return Reject("invalid_utf8", "the row holds bytes that are not valid UTF-8; re-encode the "
                      "file as UTF-8", str(path), line, ctx.name, excerpt(raw))
    if len(cells) != len(header):
        return Reject("bad_csv", f"row has {len(cells)} fields but the header has {len(header)}; "
                      "quote fields that contain commas", str(path), line, ctx.name, excerpt(raw))
    return row_to_record(dict(zip(header, cells)), ctx, path, line, raw)
