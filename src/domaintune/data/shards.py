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
from typing import Any

import numpy as np

from domaintune.artifacts import atomic_write_json, stable_hash
from domaintune.config import DataConfig
from domaintune.data.engine import RecordSteps, ShardWriter, Signatures, SourceReader, build_executor, plan_shards
from domaintune.data.records import Record, Reject, SourceContext
from domaintune.data.steps import Step
from domaintune.errors import DataError

SHARDS = "shards"
RECENT = "recent.json"
# Shard sets kept: the current settings' and the two before. Each holds the whole processed corpus,
# so this bounds the disk used while still making "try a setting, then set it back" free.
KEEP_SHARD_SETS = 3
# Settings used only after the shards (merge, split, report): changing them reuses the shards.
MERGE_ONLY = ("split", "exact_dedup", "max_reject_fraction", "engine")
Sources = list[tuple[SourceContext, list[Path]]]


@dataclass
class Kept:
    pos: tuple[int, int, int]
    orig: str
    record: Record
    sig: np.ndarray


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
    return stable_hash({"settings": settings, "files": files, "tasks": tasks})[:16]


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


def _record(obj: dict[str, Any]) -> Record:
    src = obj["source"]
    return Record(obj["id"], obj["text"], obj["stream"], src["name"], src["path"], src["line"],
                  obj["steps"], obj["meta"])


def load_shards(out: Path) -> tuple[list[Kept], list[Dropped], dict[str, dict[str, int]]]:
    """Every shard's kept records (with signatures), rejects, and summed step counts."""
    kept: list[Kept] = []
    dropped: list[Dropped] = []
    counts: dict[str, dict[str, int]] = {}
    for kept_file in sorted(out.glob("*.kept.jsonl")):
        rank = kept_file.name.split(".")[0]
        sigs = np.load(out / f"{rank}.sig.npy")
        for row, obj in enumerate(_lines(kept_file)):
            kept.append(Kept(tuple(obj["pos"]), obj["orig"], _record(obj["record"]), sigs[row]))
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
