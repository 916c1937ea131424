"""Bytes -> text for whole-file formats, with optional encoding detection.

`encoding: utf-8` (the default) is strict: bad bytes quarantine the document, because guessing
silently can turn a corrupt file into plausible garbage. `encoding: auto` asks charset-normalizer,
which is what a folder of GBK/Big5/UTF-16 exports from Windows tools needs; the detected codec is
recorded in the record's steps (`decode.<codec>`) so lineage shows the text was transcoded.
"""

from __future__ import annotations

import codecs

_BOM = b"\xef\xbb\xbf"


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str, line: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.line = reason, detail, line


def decode_document(data: bytes, encoding: str) -> tuple[str, str | None]:
    """(text, codec used when it was not plain UTF-8) or DecodeError."""
    if data.startswith(_BOM) or encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return _strict_utf8(data.removeprefix(_BOM)), None
    if encoding != "auto":
        return _decode_with(data, encoding), encoding
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    return _detect(data)


def detect_encoding(sample: bytes) -> str:
    """The codec for a sample of a line-based file (csv); utf-8 when it decodes or nothing fits."""
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 4:  # the sample cut a character in half
            return "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return best.encoding if best is not None else "utf-8"


def _strict_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DecodeError("invalid_utf8", f"line {line}, byte {exc.start} (0x{data[exc.start]:02x}) is not "
                          "valid UTF-8; re-encode the file as UTF-8 or set encoding: auto (or the codec) "
                          "on the source", line) from None


def _decode_with(data: bytes, encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DecodeError("bad_encoding", f"unknown encoding '{encoding}'; use a Python codec name "
                          "(e.g. gb18030, cp1252) or 'auto'") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_encoding", f"byte {exc.start} is not valid {encoding}; "
                          "set encoding: auto to detect it") from None


def _detect(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DecodeError("undetected_encoding", "not UTF-8 and no known encoding fits (binary file?); "
                          "remove it from the source or set encoding to its codec")
    return str(best), best.encoding
