"""The sharded phase of the data stage, as a datatrove pipeline.

read sources -> per-record steps (`stage.build_steps`) -> MinHash signatures -> shard files.

Files are assigned to `tasks` shards (balanced by size, deterministic); each shard is one datatrove
task. datatrove's completion markers (logging_dir/completions/NNNNN) give resumability: a killed
run re-runs only the shards without a marker. A shard's files are written atomically before its
marker, so a marker always means complete files. The whole phase lives in a folder named by the
hash of everything it depends on: a changed setting starts a fresh folder, an unchanged one is
reused as is (so only the in-process merge re-runs when only split/dedup settings change).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from domaintune.data.readers import read_file
from domaintune.data.records import Record, Reject, SourceContext
from domaintune.data.steps import Step, apply_steps
from domaintune.data.writers import JsonlWriter
from domaintune.governance.neardup import Signer

MAX_AUTO_TASKS = 64


@dataclass(frozen=True)
class Unit:
    """One input file and where it sits in reading order."""

    source: int
    file: int
    path: str
    size: int


def text_sha(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def plan_shards(sources: Sequence[tuple[SourceContext, list[Path]]], tasks: int | None) -> list[list[Unit]]:
    """Files -> shards: largest first onto the lightest shard, ties by shard number."""
    units = [Unit(ctx.index, i, str(p), p.stat().st_size)
             for ctx, files in sources for i, p in enumerate(files)]
    n = max(1, min(tasks or min(len(units), MAX_AUTO_TASKS), len(units)))
    shards: list[list[Unit]] = [[] for _ in range(n)]
    load = [0] * n
    for unit in sorted(units, key=lambda u: (-u.size, u.source, u.file)):
        k = min(range(n), key=lambda j: (load[j], j))
        shards[k].append(unit)
        load[k] += unit.size + 1
    return [sorted(s, key=lambda u: (u.source, u.file)) for s in shards]


class SourceReader(PipelineStep):
    """Reads the files of one shard with our readers; rejects travel on as empty Documents."""

    name = "domaintune sources"
    type = "📖 - READER"

    def __init__(self, plan: list[list[Unit]], contexts: list[SourceContext]):
        super().__init__()
        self.plan, self.contexts = plan, contexts

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for unit in self.plan[rank]:
            ctx = self.contexts[unit.source]
            for seq, item in enumerate(read_file(Path(unit.path), ctx)):
                pos = [unit.source, unit.file, seq]
                if isinstance(item, Reject):
                    self.stat_update(f"reject.{item.reason}")
                    yield Document("", f"reject:{pos}", metadata={"item": item, "pos": pos})
                    continue
                self.stat_update("records")
                yield Document(item.text, item.id, metadata={"item": item, "pos": pos,
                                                             "orig": text_sha(item.text)})


class RecordSteps(PipelineStep):
    """Runs our per-record steps on each Document; the step that rejects a record is remembered."""

    name = "domaintune steps"
    type = "🔨 - STEPS"

    def __init__(self, steps: list[Step], out_dir: str):
        super().__init__()
        self.steps, self.out_dir = steps, out_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            item = doc.metadata["item"]
            if isinstance(item, Record):
                with self.track_time():
                    doc.metadata["item"], doc.metadata["step"] = self._apply(item)
            yield doc
        self._save_step_counts(rank)

    def _apply(self, rec: Record) -> tuple[Record | Reject, str | None]:
        rejected_by: list[str] = []

        def rejected(step: Step, rej: Reject) -> None:
            self.stat_update(f"{step.name}.{rej.reason}")
            rejected_by.append(step.name)

        item = apply_steps(rec, self.steps, on_reject=rejected)
        return item, (rejected_by[0] if rejected_by else None)

    def _save_step_counts(self, rank: int) -> None:
        """Steps that count what they did (e.g. PII found, by type) expose `counts`; summed later."""
        counts = {s.name: dict(s.counts) for s in self.steps if isinstance(getattr(s, "counts", None), dict)}
        path = Path(self.out_dir) / f"{rank:05d}.counts.json"
        path.write_text(json.dumps(counts, sort_keys=True, default=str), encoding="utf-8")


class Signatures(PipelineStep):
    """MinHash signature of every kept record (the corpus-wide LSH runs after the shards)."""

    name = "minhash signatures"
    type = "🫂 - DEDUP"

    def __init__(self, num_perm: int, ngram: int):
        super().__init__()
        self.num_perm, self.ngram = num_perm, ngram

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sign = Signer(self.num_perm, self.ngram)
        for doc in data:
            item = doc.metadata["item"]
            if isinstance(item, Record):
                with self.track_time():
                    doc.metadata["sig"] = sign(item.text)
            yield doc


class ShardWriter(PipelineStep):
    """Writes a shard's kept records, rejects and signatures, each file atomically."""

    name = "shard files"
    type = "💽 - WRITER"

    def __init__(self, out_dir: str, num_perm: int):
        super().__init__()
        self.out_dir, self.num_perm = out_dir, num_perm

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = Path(self.out_dir)
        sigs: list[np.ndarray] = []
        reasons: Counter = Counter()
        with JsonlWriter(out / f"{rank:05d}.kept.jsonl") as kept, \
                JsonlWriter(out / f"{rank:05d}.rejects.jsonl") as rejects:
            for doc in data:
                item, meta = doc.metadata["item"], doc.metadata
                if isinstance(item, Reject):
                    reasons[item.reason] += 1
                    rejects.write({"pos": meta["pos"], "id": None if doc.id.startswith("reject:") else doc.id,
                                   "step": meta.get("step"), "orig": meta.get("orig"), "reject": item.to_json()})
                    continue
                self.stat_update("kept")
                kept.write({"pos": meta["pos"], "orig": meta["orig"], "record": item.to_json()})
                sigs.append(meta.get("sig", np.zeros(self.num_perm, dtype=np.uint32)))
        matrix = np.stack(sigs) if sigs else np.zeros((0, self.num_perm), dtype=np.uint32)
        tmp = out / f".{rank:05d}.sig.tmp.npy"
        np.save(tmp, matrix)
        tmp.replace(out / f"{rank:05d}.sig.npy")
        yield from ()


def build_executor(settings: Any, pipeline: list[PipelineStep], tasks: int, logging_dir: Path):
    """datatrove executor per `data.engine` (local by default; slurm/ray for clusters)."""
    if settings.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(pipeline=pipeline, tasks=tasks, time=settings.slurm_time,
                                     partition=settings.slurm_partition, logging_dir=str(logging_dir),
                                     job_name="domaintune-data")
    if settings.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=settings.workers,
                                   logging_dir=str(logging_dir))
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(settings.workers, tasks),
                                 logging_dir=str(logging_dir), start_method="spawn")
