"""The on-disk index and its incremental build.

A folder holds `chunks.jsonl` (text, offsets, document id, lineage id, title, version),
`documents.json` (id, title, version, ACL labels), `dense.npy` (one row per chunk, when an embedder
is used) and `index.json`, written last: the index version, the chunk settings and the embedder's
id and weights hash. A rebuild re-chunks and re-embeds only documents whose text or title changed;
documents that are gone lose their chunks, vectors and metadata; any change moves the version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from domaintune.artifacts import atomic_write, atomic_write_json
from domaintune.errors import DomainTuneError
from domaintune.kb.chunking import TokenCounter, chunk_spans
from domaintune.kb.embed import Embedder
from domaintune.kb.sources import Document

FORMAT = 1
EMBED_BATCH = 32
INDEX, DOCUMENTS, CHUNKS, DENSE = "index.json", "documents.json", "chunks.jsonl", "dense.npy"


class KBError(DomainTuneError):
    """The index is missing, unreadable or does not match the configured embedder."""


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    document_id: str
    lineage_id: str
    title: str
    version: str
    ord: int
    start: int
    end: int
    text: str


@dataclass
class IndexData:
    meta: dict
    documents: dict[str, dict]  # id -> {id, title, version, acl, lineage_id, source, chunks}
    chunks: list[Chunk]
    dense: np.ndarray | None  # (len(chunks), dim) or None for a lexical-only index


def doc_version(doc: Document) -> str:
    return hashlib.sha256(f"{doc.title}\0{doc.text}".encode()).hexdigest()[:16]


def chunk_document(doc: Document, count: TokenCounter, max_tokens: int, overlap: int) -> list[Chunk]:
    version = doc_version(doc)
    return [Chunk(chunk_id=f"{doc.id}#{i}", document_id=doc.id, lineage_id=doc.lineage_id, title=doc.title,
                  version=version, ord=i, start=a, end=b, text=doc.text[a:b])
            for i, (a, b) in enumerate(chunk_spans(doc.text, count, max_tokens, overlap))]


def embedder_meta(embedder: Embedder | None) -> dict | None:
    if embedder is None:
        return None
    return {"id": embedder.model_id, "hash": embedder.weights_hash, "dim": embedder.dim}


def check_embedder(meta: dict, embedder: Embedder | None, folder: Path) -> None:
    """Refuse a query embedder that did not build the index (another model or other weights)."""
    built = meta.get("embedder")
    if embedder is None or built is None:
        return
    mine = embedder_meta(embedder)
    if (built["id"], built["hash"]) != (mine["id"], mine["hash"]):
        raise KBError(f"{folder}: the index was embedded with {built['id']} (weights {built['hash'][:12]}), "
                      f"but the configured embedder is {mine['id']} (weights {mine['hash'][:12]}); vectors of "
                      f"different models cannot be compared: run `domaintune kb build CONFIG` again")


# ------------------------------------------------------------------ load / save
def load(folder: Path) -> IndexData:
    folder = Path(folder)
    meta_path = folder / INDEX
    if not meta_path.is_file():
        raise KBError(f"no knowledge-base index in {folder}: run `domaintune kb build CONFIG` first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        documents = {d["id"]: d for d in json.loads((folder / DOCUMENTS).read_text(encoding="utf-8"))}
        with open(folder / CHUNKS, encoding="utf-8") as fh:
            chunks = [Chunk(**json.loads(line)) for line in fh if line.strip()]
        dense = np.load(folder / DENSE, allow_pickle=False) if meta.get("embedder") else None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KBError(f"the index in {folder} is unreadable ({type(err).__name__}: {err}); "
                      f"rebuild it: domaintune kb build CONFIG") from None
    if meta.get("format") != FORMAT or (dense is not None and dense.shape[0] != len(chunks)):
        raise KBError(f"the index in {folder} is from another format or is inconsistent; rebuild it: "
                      f"domaintune kb build CONFIG")
    return IndexData(meta, documents, chunks, dense)


def save(folder: Path, data: IndexData) -> None:
    """Data files first, index.json last: a crash mid-save leaves the old index.json, whose version
    no longer matches; load then refuses the folder with "inconsistent" instead of mixing."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in data.chunks)
    atomic_write(folder / CHUNKS, lambda fh: fh.write(lines.encode()))
    atomic_write_json(folder / DOCUMENTS, list(data.documents.values()))
    if data.dense is not None:
        atomic_write(folder / DENSE, lambda fh: np.save(fh, data.dense, allow_pickle=False))
    else:
        (folder / DENSE).unlink(missing_ok=True)
    atomic_write_json(folder / INDEX, data.meta)


# ------------------------------------------------------------------ incremental build
@dataclass
class BuildReport:
    version: str
    documents: int
    chunks: int
    added: list[str]
    changed: list[str]
    deleted: list[str]
    relabelled: list[str]
    embedded_chunks: int


def _previous(folder: Path, settings: dict, embedder: Embedder | None) -> IndexData | None:
    """The old index when it can be reused: same chunk settings and the same embedder."""
    try:
        old = load(folder)
    except KBError:
        return None
    same = old.meta.get("chunking") == settings and old.meta.get("embedder") == embedder_meta(embedder)
    return old if same else None


def build(folder: Path, docs: list[Document], count: TokenCounter, settings: dict,
          embedder: Embedder | None, name: str) -> BuildReport:
    """Write the index for `docs` into `folder`, reusing what an earlier build already did."""
    folder = Path(folder)
    old = _previous(folder, settings, embedder)
    old_docs = old.documents if old else {}
    old_rows: dict[str, list[int]] = {}
    for row, c in enumerate(old.chunks if old else []):
        old_rows.setdefault(c.document_id, []).append(row)
    chunks, rows, fresh = [], [], []  # rows: old dense row per chunk, or -1 for a new one
    added, changed, relabelled = [], [], []
    documents = {}
    for doc in docs:
        version, prev = doc_version(doc), old_docs.get(doc.id)
        if prev is not None and prev["version"] == version:
            kept = [old.chunks[r] for r in old_rows.get(doc.id, [])]
            chunks += kept
            rows += old_rows.get(doc.id, [])
            if sorted(prev["acl"]) != sorted(doc.labels):
                relabelled.append(doc.id)
        else:
            (changed if prev is not None else added).append(doc.id)
            new = chunk_document(doc, count, settings["max_tokens"], settings["overlap_tokens"])
            fresh += [len(chunks) + i for i in range(len(new))]
            chunks += new
            rows += [-1] * len(new)
        documents[doc.id] = {"id": doc.id, "title": doc.title, "version": version, "acl": sorted(doc.labels),
                             "lineage_id": doc.lineage_id, "source": doc.source,
                             "chunks": 0}
    for c in chunks:
        documents[c.document_id]["chunks"] += 1
    deleted = sorted(set(old_docs) - set(documents))
    dense = _dense(embedder, chunks, rows, fresh, old)
    content = hashlib.sha256(json.dumps([list(documents.values()), [c.chunk_id for c in chunks]],
                                        sort_keys=True).encode()).hexdigest()[:16]
    unchanged = old is not None and old.meta.get("content") == content
    version = old.meta["version"] if unchanged else _next_version(old.meta if old else None, content)
    meta = {"format": FORMAT, "name": name, "version": version, "content": content, "chunking": settings,
            "embedder": embedder_meta(embedder), "documents": len(documents), "chunks": len(chunks)}
    save(folder, IndexData(meta, documents, chunks, dense))
    return BuildReport(version, len(documents), len(chunks), added, changed, deleted, relabelled,
                       len(fresh) if embedder is not None else 0)


def _next_version(old_meta: dict | None, content: str) -> str:
    n = int(str(old_meta["version"]).split("-")[0]) + 1 if old_meta else 1
    return f"{n}-{content[:8]}"


def _dense(embedder: Embedder | None, chunks: list[Chunk], rows: list[int], fresh: list[int],
           old: IndexData | None) -> np.ndarray | None:
    if embedder is None:
        return None
    out = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
    reused = [i for i, r in enumerate(rows) if r >= 0]
    if reused and old is not None and old.dense is not None:
        out[reused] = old.dense[[rows[i] for i in reused]]
    for start in range(0, len(fresh), EMBED_BATCH):  # bounded batches: padding and memory stay small
        rows_now = fresh[start:start + EMBED_BATCH]
        out[rows_now] = embedder.passages([passage_text(chunks[i]) for i in rows_now])
    return out


def passage_text(chunk: Chunk) -> str:
    """What is embedded and indexed: the title gives a chunk from the middle of a document its topic."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title and not chunk.text.startswith(chunk.title) else chunk.text
