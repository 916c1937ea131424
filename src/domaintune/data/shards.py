"""Run the sharded phase (engine.py) under a datatrove executor, and read what it wrote as streams
(kept lines with their byte offsets, rejects in reading order, signature rows in chunks) or one record
at a time by offset: the merge never loads a shard whole.

The phase folder is `shards/<key>/`, where key hashes the phase's settings and the input files'
sizes and mtimes: re-running after a kill reuses the folder and datatrove skips the shards that
have a completion marker; any change that would alter a shard's output gives a new key. The
folders of the last few keys are kept (`shards/recent.json`, most recent first), so setting a
value back reuses its shards instead of re-reading the corpus; older ones are deleted.
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.config import DataConfig
from domaintune.data.engine import RecordSteps, ShardWriter, Signatures, SourceReader, build_executor, plan_shards
from domaintune.data.records import Reject, SourceContext
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
OPEN_SHARD_FILES = 16  # kept files a ShardLines reader holds open at once
SIGNATURE_CHUNK = 128  # signature rows read at once (128 KB at 128 permutations)
Sources = list[tuple[SourceContext, list[Path]]]


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


def shard_ranks(out: Path) -> list[str]:
    """The shard numbers ("00000", ...) that wrote a kept file, in order."""
    return sorted(f.name.split(".")[0] for f in out.glob("*.kept.jsonl"))


def kept_lines(out: Path, rank: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset, parsed line) per kept record of one shard, in the shard's reading order."""
    with (out / f"{rank}.kept.jsonl").open("rb") as fh:
        offset = 0
        for line in fh:
            yield offset, json.loads(line)
            offset += len(line)


def _dropped(path: Path) -> Iterator[Dropped]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            yield Dropped(tuple(obj["pos"]), obj["id"], obj["step"], obj["orig"], Reject(**obj["reject"]))


def dropped_in_order(out: Path) -> Iterator[Dropped]:
    """Every shard's rejects in reading order: each shard file is in reading order already, so a
    k-way merge streams them without loading any."""
    return heapq.merge(*(_dropped(out / f"{rank}.rejects.jsonl") for rank in shard_ranks(out)),
                       key=lambda d: d.pos)


def step_counts(out: Path) -> dict[str, dict[str, int]]:
    """The steps' own counts (e.g. PII found by type), summed over the shards."""
    counts: dict[str, dict[str, int]] = {}
    for rank in shard_ranks(out):
        for step, tally in json.loads((out / f"{rank}.counts.json").read_text(encoding="utf-8")).items():
            merged = counts.setdefault(step, {})
            for k, v in tally.items():
                if isinstance(v, (int, float)):
                    merged[k] = merged.get(k, 0) + v
    return counts


def signature_rows(out: Path, rank: str, chunk: int = SIGNATURE_CHUNK) -> Iterator[np.ndarray]:
    """A shard's signature matrix, `chunk` rows at a time, read with plain file reads: a memory map
    would leave every page it touched resident (~900 bytes per document at 112 permutations)."""
    with (out / f"{rank}.sig.npy").open("rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if fortran or len(shape) != 2:
            raise DataError(f"{out / f'{rank}.sig.npy'} is not a row-major signature matrix; delete "
                            f"{out} to rebuild the shards")
        width = shape[1] * dtype.itemsize
        for start in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - start)
            block = np.frombuffer(fh.read(n * width), dtype=dtype).reshape(n, shape[1])
            yield from block


class ShardLines:
    """Reads kept records back by (shard, byte offset); a few file handles stay open, not the texts."""

    def __init__(self, out: Path):
        self.out = out
        self._files: OrderedDict[str, Any] = OrderedDict()

    def record(self, rank: str, offset: int) -> dict[str, Any]:
        """The kept record's JSON object (what `Record.to_json` wrote)."""
        fh = self._files.get(rank)
        if fh is None:
            fh = self._files[rank] = (self.out / f"{rank}.kept.jsonl").open("rb")
            if len(self._files) > OPEN_SHARD_FILES:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(rank)
        fh.seek(offset)
        return json.loads(fh.readline())["record"]

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
