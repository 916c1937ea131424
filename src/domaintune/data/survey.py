"""`domaintune init`'s look at a folder: which formats, languages and sizes it holds, how much of it
looks like personal data or duplicates, and which data sources would read it.

Every file goes through the same readers the data stage uses (so what `init` reports is what a run
would see), but only the first `max_records` records of a file and the first `max_docs` documents
overall are analysed: a first look at a large folder must take seconds, not the run's time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.data.readers import EXTENSIONS, read_file
from domaintune.data.records import Record, SourceContext
from domaintune.data.report import approx_tokens
from domaintune.data.sources import expand_path
from domaintune.governance.canonical import canonical
from domaintune.governance.langid import identify
from domaintune.governance.neardup import NearDupIndex, Signer, exact_digest
from domaintune.governance.pii import PiiFinder, builtin_detectors

CONVERSATION_FIELDS = ("conversation_id", "conversation", "session_id", "dialog_id", "thread_id", "chat_id")
SPEAKER_FIELDS = ("speaker", "role", "from", "author", "sender")
TURN_FIELDS = ("turn", "turn_id", "seq", "index", "position")
ID_FIELDS = ("id", "doc_id", "uuid", "key")
PEEK_ROWS = 50
# Glossary candidates: acronyms, codes and CamelCase names (two capitals or more), e.g. SWIFT, HarborPay
_TERM = re.compile(r"(?<![\w-])[A-Z][A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*(?:[+-][A-Za-z0-9]+)?(?![\w-])")


@dataclass
class SourceGuess:
    """One data source `init` proposes: a glob or file list of one format with its field names."""

    name: str
    fmt: str
    paths: list[Path]
    pattern: str | None = None  # a glob covering exactly `paths`, when there is one
    text_field: str = "text"
    id_field: str | None = None
    conversation_field: str | None = None
    speaker_field: str | None = None
    turn_field: str | None = None

    def settings(self) -> dict[str, Any]:
        """The non-default source keys (besides path/stream/name)."""
        out: dict[str, Any] = {}
        if self.fmt == "chat":
            out.update(format="chat", conversation_field=self.conversation_field, speaker_field=self.speaker_field,
                       turn_field=self.turn_field)
        if self.text_field != "text":
            out["text_field"] = self.text_field
        if self.id_field:
            out["id_field"] = self.id_field
        return out


@dataclass
class Survey:
    folder: Path
    files_by_format: Counter = field(default_factory=Counter)
    bytes_by_format: Counter = field(default_factory=Counter)
    skipped: list[Path] = field(default_factory=list)  # no reader for the extension
    sources: list[SourceGuess] = field(default_factory=list)
    docs: int = 0
    rejects: Counter = field(default_factory=Counter)  # reason -> count, as the readers report them
    tokens_by_language: Counter = field(default_factory=Counter)  # approx tokens: a CJK character ~ a word
    pii: Counter = field(default_factory=Counter)
    docs_with_pii: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    duplicate_examples: list[tuple[str, str]] = field(default_factory=list)  # (copy, kept) ids
    sampled: bool = False  # True when max_docs cut the analysis short
    chars: int = 0
    approx_tokens: int = 0
    terms: Counter = field(default_factory=Counter)  # glossary candidates -> occurrences

    @property
    def languages(self) -> list[tuple[str, float]]:
        total = sum(self.tokens_by_language.values()) or 1
        return [(lang, n / total) for lang, n in self.tokens_by_language.most_common()]


def _peek_rows(path: Path) -> list[dict[str, Any]]:
    """The first rows of a jsonl/csv file as dicts (bad rows skipped: the readers will report them)."""
    import csv

    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        if path.suffix.lower() == ".csv":
            for i, row in enumerate(csv.DictReader(fh)):
                rows.append(row)
                if i + 1 >= PEEK_ROWS:
                    break
            return rows
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
            if len(rows) >= PEEK_ROWS:
                break
    return rows


def _first(names: tuple[str, ...], keys: set[str]) -> str | None:
    return next((n for n in names if n in keys), None)


def guess_fields(path: Path) -> dict[str, Any]:
    """Format and field names of a row-based file: chat when rows name a conversation and a speaker."""
    rows = _peek_rows(path)
    keys = set().union(*(r.keys() for r in rows)) if rows else set()
    strings = Counter()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, str):
                strings[k] += len(v)
    text = "text" if "text" in keys else (strings.most_common(1)[0][0] if strings else "text")
    ids = [r.get(_first(ID_FIELDS, keys)) for r in rows] if _first(ID_FIELDS, keys) else []
    id_field = _first(ID_FIELDS, keys) if ids and len(set(map(str, ids))) == len(ids) else None
    conv, speaker = _first(CONVERSATION_FIELDS, keys), _first(SPEAKER_FIELDS, keys)
    if conv and speaker:
        return {"fmt": "chat", "text_field": text, "conversation_field": conv, "speaker_field": speaker,
                "turn_field": _first(TURN_FIELDS, keys)}
    return {"fmt": EXTENSIONS[path.suffix.lower()], "text_field": text, "id_field": id_field}


def group_sources(folder: Path, files: list[Path]) -> tuple[list[SourceGuess], list[Path]]:
    """Files grouped into sources by format and field names; (sources, files no reader knows)."""
    groups: dict[tuple, list[Path]] = {}
    skipped = []
    for f in files:
        ext = f.suffix.lower()
        if ext not in EXTENSIONS:
            skipped.append(f)
            continue
        fields = guess_fields(f) if EXTENSIONS[ext] in ("jsonl", "csv") else {"fmt": EXTENSIONS[ext]}
        groups.setdefault((ext, tuple(sorted(fields.items(), key=lambda kv: kv[0]))), []).append(f)
    by_ext = Counter(f.suffix.lower() for f in files)
    sources = []
    for (ext, fields), paths in groups.items():
        spec = dict(fields)
        name = spec["fmt"] if spec["fmt"] == "chat" else ext.lstrip(".")
        while any(s.name == name for s in sources):
            name += "-2"
        # a glob only when it matches exactly these files (globs are case-sensitive: .HTML is not .html)
        pattern = f"**/*{ext}" if len(paths) == by_ext[ext] and all(p.suffix == ext for p in paths) else None
        sources.append(SourceGuess(name, spec.pop("fmt"), paths, pattern, **spec))
    return sorted(sources, key=lambda s: s.name), skipped


def _context(src: SourceGuess, index: int, root: Path) -> SourceContext:
    fmt = "chat" if src.fmt == "chat" else "auto"
    return SourceContext(index=index, name=src.name, label=src.name, stream="domain", fmt=fmt, root=root,
                         text_field=src.text_field, id_field=src.id_field, encoding="auto",
                         conversation_field=src.conversation_field or "conversation_id",
                         speaker_field=src.speaker_field or "speaker", turn_field=src.turn_field)


class _Analyser:
    """Languages, PII and duplicates over the documents read, in reading order."""

    def __init__(self, survey: Survey, threshold: float = 0.8):
        self.survey = survey
        self.finder = PiiFinder(builtin_detectors())
        self.signer, self.index = Signer(), NearDupIndex(threshold)
        self.seen: dict[bytes, str] = {}

    def add(self, rec: Record) -> None:
        s = self.survey
        s.docs += 1
        s.chars += len(rec.text)
        tokens = approx_tokens(rec.text)
        s.approx_tokens += tokens
        s.tokens_by_language[identify(rec.text).code] += tokens
        s.terms.update(t for t in _TERM.findall(rec.text) if 2 <= len(t) <= 24)
        found = self.finder.find(rec.text)
        s.pii.update(f.type for f in found)
        s.docs_with_pii += bool(found)
        digest = exact_digest(" ".join(rec.text.split()))
        if digest in self.seen:
            s.exact_duplicates += 1
            self._example(rec.id, self.seen[digest])
            return
        self.seen[digest] = rec.id
        form = canonical(rec.text)
        sig = self.signer(form)
        keeper = self.index.match(form, sig)
        if keeper is None:
            self.index.add(rec.id, form, sig)
        else:
            s.near_duplicates += 1
            self._example(rec.id, keeper)

    def _example(self, copy: str, kept: str) -> None:
        if len(self.survey.duplicate_examples) < 5:
            self.survey.duplicate_examples.append((copy, kept))


def survey(folder: Path, max_records: int = 200, max_docs: int = 5000) -> Survey:
    """Look at every file of `folder` (recursively, hidden files left out) through the data readers."""
    root, files = expand_path(str(folder))
    result = Survey(folder)
    result.sources, result.skipped = group_sources(root, files)
    for f in files:
        fmt = "chat" if any(f in s.paths for s in result.sources if s.fmt == "chat") else \
            EXTENSIONS.get(f.suffix.lower(), f.suffix.lower() or "(none)")
        result.files_by_format[fmt] += 1
        result.bytes_by_format[fmt] += f.stat().st_size
    analyser = _Analyser(result)
    for index, src in enumerate(result.sources):
        ctx = _context(src, index, root)
        for path in src.paths:
            for n, item in enumerate(read_file(path, ctx)):
                if n >= max_records or result.docs >= max_docs:
                    result.sampled = True
                    break
                if isinstance(item, Record):
                    analyser.add(item)
                else:
                    result.rejects[item.reason] += 1
    return result
