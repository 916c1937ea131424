"""Run the sharded phase (engine.py) under a datatrove executor and load what it wrote.

The phase folder is `shards/<key>/`, where key hashes the phase's settings and the input files'
sizes and mtimes: re-running after a kill reuses the folder and datatrove skips the shards that
have a completion marker; any change that would alter a shard's output gives a new key. The
folders of the last few keys are kept (`shards/recent.json`, most recent first), so setting a
value back reuses its shards instead of re-reading the corpus; older ones are deleted.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from sys import intern
from typing import Any

import numpy as np

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.config import DataConfig
from domaintune.data.engine import RecordSteps, ShardWriter, Signatures, SourceReader, build_executor, plan_shards
from domaintune.data.records import Record, Reject, SourceContext, text_sha
from domaintune.data.steps import Step
from domaintune.errors import DataError

SHARDS = "shards"
RECENT = "recent.json"
# Shard sets kept: the current settings' and the two before. Each holds the whole processed corpus,
# so this bounds the disk used while still making "try a setting, then set it back" free.
KEEP_SHARD_SETS = 3
# Settings used only after the shards (merge, split, report): changing them reuses the shards.
MERGE_ONLY = ("split", "exact_dedup", "max_reject_fraction", "engine")
# What the shards' signatures are taken of: bumped when that changes, so old shard sets are not reused.
SIGNATURE_FORM = "canonical-1"
Sources = list[tuple[SourceContext, list[Path]]]


@dataclass(slots=True)
class Kept:
    pos: tuple[int, int, int]
    orig: str
    record: Record
    sigs: np.ndarray  # the shard's memory-mapped signature matrix (shared, not copied)
    row: int

    @property
    def sig(self) -> np.ndarray:
        # a view made on use: one per kept record held for the whole merge cost ~100 bytes each
        return self.sigs[self.row]


@dataclass
class Dropped:
    pos: tuple[int, int, int]
    id: str | None
    step: str | None
    orig: str | None
    reject: Reject


def phase_key(data: DataConfig, sources: Sources, tasks: int) -> str:
    settings = {k: v for k, v in data.model_dump(mode="json").items() if k not in MERGE_ONLY}
    settings["near_dedup"] = {k: settings["near_dedup"][k] for k in ("enabled", "num_perm", "ngram")}
    files = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for _, paths in sources for p in paths]
    return stable_hash({"settings": settings, "files": files, "tasks": tasks, "signature": SIGNATURE_FORM})[:16]


def run_shards(data: DataConfig, sources: Sources, steps: list[Step], stage_dir: Path) -> Path:
    """Process every unfinished shard; the folder holding the shard files."""
    plan = plan_shards(sources, data.engine.tasks)
    key = phase_key(data, sources, len(plan))
    root = stage_dir / SHARDS
    out = root / key
    keep_recent(root, key)
    out.mkdir(parents=True, exist_ok=True)
    contexts = [ctx for ctx, _ in sources]
    pipeline = [SourceReader(plan, contexts), RecordSteps(steps, str(out)),
                *([Signatures(data.near_dedup.num_perm, data.near_dedup.ngram)] if data.near_dedup.enabled else []),
                ShardWriter(str(out), data.near_dedup.num_perm)]
    executor = build_executor(data.engine, pipeline, len(plan), out / "logs")
    from loguru import logger

    logger.disable("datatrove")  # it logs every task to stderr; the stage prints its own summary
    try:
        executor.run()
    finally:
        logger.enable("datatrove")
    missing = executor.get_incomplete_ranks()
    if missing:
        raise DataError(f"{len(missing)} of {len(plan)} data shards are not finished (e.g. shard {missing[0]}; "
                        f"logs in {out / 'logs'}). With data.engine.executor={data.engine.executor} the jobs "
                        "may still be running: re-run the data stage when they end; finished shards are reused.")
    return out


def keep_recent(root: Path, key: str, keep: int = KEEP_SHARD_SETS) -> list[str]:
    """Put `key` first in the recent list and delete the shard folders of keys that fell off it."""
    try:
        recent = json.loads((root / RECENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recent = []  # no list yet (or a damaged one): only the current folder is known to be wanted
    if not isinstance(recent, list):
        recent = []
    recent = [key, *[k for k in recent if isinstance(k, str) and k != key]][:keep]
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.is_dir() and old.name not in recent:
            shutil.rmtree(old, ignore_errors=True)
    atomic_write_json(root / RECENT, recent)
    return recent


def _lines(path: Path):
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


class StoredRecord(Record):
    """A kept record whose text stays in its shard file.

    The merge needs every kept record at once (keeper order, near-dup clusters, the split), but
    only its small fields: holding the texts too cost about 5x the corpus in memory. The text is
    read back from the shard line (by byte offset, not cached) when a corpus step, the near-dup
    check or a writer asks for it; its length and hash are kept from the one full read."""

    def __init__(self, obj: dict[str, Any], file: Path, offset: int):
        src = obj["source"]
        # stream, source name and path repeat on every record of a file: one shared string each
        super().__init__(obj["id"], "", intern(obj["stream"]), intern(src["name"]), intern(src["path"]), src["line"],
                         obj["steps"], obj["meta"])
        self._file, self._offset = file, offset
        self._chars, self._sha = len(obj["text"]), text_sha(obj["text"])

    @property
    def text(self) -> str:
        if self._text is not None:
            return self._text
        with self._file.open("rb") as fh:
            fh.seek(self._offset)
            return json.loads(fh.readline())["record"]["text"]

    @text.setter
    def text(self, value: str) -> None:
        # Record.__init__ assigns "" first; a later assignment (a step rewriting it) is held in memory
        self._text = value if getattr(self, "_file", None) else None

    @property
    def chars(self) -> int:
        return self._chars if self._text is None else len(self._text)

    @property
    def sha(self) -> str:
        return self._sha if self._text is None else text_sha(self._text)


def _kept_lines(path: Path):
    """(byte offset, parsed object) per line of a shard's kept file."""
    with path.open("rb") as fh:
        offset = 0
        for line in fh:
            yield offset, json.loads(line)
            offset += len(line)


def load_shards(out: Path) -> tuple[list[Kept], list[Dropped], dict[str, dict[str, int]]]:
    """Every shard's kept records (with signatures; texts stay on disk: `StoredRecord`), rejects, and
    summed step counts."""
    kept: list[Kept] = []
    dropped: list[Dropped] = []
    counts: dict[str, dict[str, int]] = {}
    for kept_file in sorted(out.glob("*.kept.jsonl")):
        rank = kept_file.name.split(".")[0]
        sigs = np.load(out / f"{rank}.sig.npy", mmap_mode="r")  # paged in from the file, not copied
        for row, (offset, obj) in enumerate(_kept_lines(kept_file)):
            kept.append(Kept(tuple(obj["pos"]), obj["orig"], StoredRecord(obj["record"], kept_file, offset),
                             sigs, row))
        for obj in _lines(out / f"{rank}.rejects.jsonl"):
            dropped.append(Dropped(tuple(obj["pos"]), obj["id"], obj["step"], obj["orig"], Reject(**obj["reject"])))
        for step, tally in json.loads((out / f"{rank}.counts.json").read_text(encoding="utf-8")).items():
            merged = counts.setdefault(step, {})
            for k, v in tally.items():
                if isinstance(v, (int, float)):
                    merged[k] = merged.get(k, 0) + v
    kept.sort(key=lambda k: k.pos)
    dropped.sort(key=lambda d: d.pos)
    return kept, dropped, counts
