"""Expand `data.sources[i].path` (a file, a folder read recursively, or a glob) into files.

The file order fixed here (sources in config order, files sorted) is the order that decides
which copy of a duplicate is kept, so it must never depend on the file system's listing order.
"""

from __future__ import annotations

import glob
import re
from itertools import takewhile
from pathlib import Path

from domaintune.config import DataConfig, SourceConfig
from domaintune.data.records import SourceContext
from domaintune.errors import DataError

_GLOB_CHARS = re.compile(r"[*?\[]")
# Stream names become folder names under the stage folder.
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_RESERVED = {"rejects.jsonl", "stats.json", "streams.json", "manifest.json", "lineage.jsonl", "shards",
             "data_report.html", "data_report.json"}


def _is_hidden(path: Path, root: Path) -> bool:
    # Hidden files in a folder are editor swap files, .DS_Store, .git internals: never data.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk(folder: Path) -> list[Path]:
    return [f for f in folder.rglob("*") if f.is_file() and not _is_hidden(f, folder)]


def _glob_root(pattern: str) -> Path:
    """The folder before the first glob character: derived ids are relative to it."""
    fixed = list(takewhile(lambda part: not _GLOB_CHARS.search(part), Path(pattern).parts))
    return Path(*fixed) if fixed else Path(".")


def expand_path(path: str, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """(root folder, sorted files) for a source path; files under `exclude` are left out."""
    p = Path(path).expanduser()
    if _GLOB_CHARS.search(path):
        root = _glob_root(str(p))
        matches = [Path(m) for m in glob.glob(str(p), recursive=True)]
        files = [f for m in matches for f in (_walk(m) if m.is_dir() else [m]) if f.is_file()]
    elif p.is_dir():
        root, files = p, _walk(p)
    else:
        root, files = p.parent, ([p] if p.is_file() else [])
    if exclude is not None:
        # A source folder that contains runs_dir would otherwise read its own outputs.
        ex = exclude.resolve()
        files = [f for f in files if not f.resolve().is_relative_to(ex)]
    return root, sorted(set(files), key=str)


def _context(src: SourceConfig, index: int, root: Path, max_record_bytes: int) -> SourceContext:
    label = src.name or root.name or f"source{index}"
    return SourceContext(index=index, name=src.name or src.path, label=label, stream=src.stream,
                         fmt=src.format, root=root, path=src.path, text_field=src.text_field,
                         id_field=src.id_field, encoding=src.encoding,
                         max_record_bytes=max_record_bytes, conversation_field=src.conversation_field,
                         speaker_field=src.speaker_field, turn_field=src.turn_field, html=src.html)


def _stream_problem(src: SourceConfig, index: int) -> str | None:
    if _STREAM_NAME.match(src.stream) and src.stream not in _RESERVED:
        return None
    return (f"data.sources[{index}].stream: '{src.stream}' cannot be used as a folder name; use "
            "letters, digits, '_', '.' and '-' (e.g. 'finance')")


def resolve_sources(data: DataConfig,
                    exclude: Path | None = None) -> list[tuple[SourceContext, list[Path]]]:
    """Every source with its files; all unusable sources are reported in one DataError."""
    resolved, problems = [], []
    for i, src in enumerate(data.sources):
        root, files = expand_path(src.path, exclude)
        if not files:
            problems.append(f"data.sources[{i}].path: '{src.path}' matches no files; fix the path "
                            "(relative paths resolve against the config file's folder)")
        if (problem := _stream_problem(src, i)) is not None:
            problems.append(problem)
        resolved.append((_context(src, i, root, data.max_record_bytes), files))
    if problems:
        raise DataError("cannot read the data sources:\n" + "\n".join(f"  - {p}" for p in problems))
    return resolved
