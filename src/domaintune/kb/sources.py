"""The documents a KB indexes: by default the data stage's governed output (read through its
manifest, never the raw sources), plus optional extra files; each with its ACL labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from domaintune.artifacts import RunDir
from domaintune.config.kb import KBConfig, KBSourceConfig
from domaintune.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str
    labels: frozenset[str]
    lineage_id: str  # where it came from: the data stage's record id (see `domaintune data trace`)
    source: str


def _dotted(obj: Any, path: str | None) -> Any:
    if not path:
        return None
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _title(text: str) -> str:
    first = text.strip().split("\n", 1)[0].strip()
    return first[:120]


def _labels(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: ACL labels must be a list of strings or a comma-separated string, got {value!r}")
    return frozenset(value)


def _sidecar(path: Path | None) -> dict[str, frozenset[str]]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise ConfigError([f"kb.sources[].acl_file: file not found: {path}"])
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: an ACL sidecar maps document id -> list of labels")
    return {str(k): _labels(v, f"{path}: {k}") or frozenset() for k, v in data.items()}


def _document(row: dict, src: KBSourceConfig, sidecar: dict, where: str, default_id: str, lineage: str,
              name: str) -> Document | None:
    text = row.get(src.text_field if src.path else "text")
    if not isinstance(text, str) or not text.strip():
        return None
    doc_id = str(row.get(src.id_field) or default_id) if src.path else str(row["id"])
    labels = sidecar.get(doc_id)
    if labels is None:
        labels = _labels(_dotted(row, src.acl_field), f"{where}: {src.acl_field}")
    title = _dotted(row, src.title_field)
    return Document(id=doc_id, text=text, title=str(title) if title else _title(text),
                    labels=frozenset(src.acl) if labels is None else labels, lineage_id=lineage or doc_id,
                    source=name)


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield line_no, json.loads(line)
                except ValueError as err:
                    raise DataError(f"{path}:{line_no}: not valid JSON ({err})") from None


def _governed(src: KBSourceConfig, run: RunDir, sidecar: dict, splits: tuple[str, ...] = SPLITS):
    streams_file = run.output("data", "streams", by="kb")
    streams = json.loads(streams_file.read_text(encoding="utf-8"))
    if src.stream not in streams:
        raise ConfigError([f"kb.sources[].stream: the data stage wrote no stream '{src.stream}' "
                           f"(streams: {', '.join(sorted(streams))})"])
    for split in splits:
        path = streams_file.parent / streams[src.stream][split]
        for line_no, row in _jsonl(path):
            doc = _document(row, src, sidecar, f"{path}:{line_no}", "", str(row.get("id")), f"stream:{src.stream}")
            if doc is not None:
                yield doc


def _files(src: KBSourceConfig, sidecar: dict):
    root = Path(src.path)
    if not root.exists():
        raise ConfigError([f"kb.sources[].path: nothing at {root}"])
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
    for f in files:
        if f.suffix == ".jsonl":
            for line_no, row in _jsonl(f):
                doc = _document(row, src, sidecar, f"{f}:{line_no}", f"{f.stem}:{line_no}", "", f"path:{root.name}")
                if doc is not None:
                    yield doc
        elif f.suffix in TEXT_SUFFIXES:
            row = {src.text_field: f.read_text(encoding="utf-8"), src.id_field: f.relative_to(
                root.parent if root.is_file() else root).as_posix()}
            doc = _document(row, src, sidecar, str(f), f.stem, "", f"path:{root.name}")
            if doc is not None:
                yield doc


def default_sources(run: RunDir) -> list[KBSourceConfig]:
    """Every stream of the data stage's output, unlabelled (deny by default)."""
    streams = json.loads(run.output("data", "streams", by="kb").read_text(encoding="utf-8"))
    return [KBSourceConfig(stream=s) for s in sorted(streams)]


def read_documents(kb: KBConfig, run: RunDir) -> list[Document]:
    """All documents, in source order; a document id seen twice is an error naming both sources."""
    docs: dict[str, Document] = {}
    for src in kb.sources or default_sources(run):
        sidecar = _sidecar(src.acl_file)
        for doc in (_governed(src, run, sidecar) if src.stream else _files(src, sidecar)):
            if doc.id in docs:
                raise DataError(f"kb '{kb.name}': document id '{doc.id}' comes from both {docs[doc.id].source} "
                                f"and {doc.source}; ids must be unique across kb.sources")
            docs[doc.id] = doc
    return list(docs.values())


def governed_documents(kb: KBConfig, run: RunDir, splits: tuple[str, ...] = SPLITS) -> list[Document]:
    """The documents of the KB's `stream:` sources (the data stage's governed output) in `splits`
    only, with their ACL labels: what `kb sft-data` may train on (its train split)."""
    out = []
    for src in kb.sources or default_sources(run):
        if src.stream:
            out.extend(_governed(src, run, _sidecar(src.acl_file), splits))
    return out
