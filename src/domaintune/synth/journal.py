"""Exactly-once generation: deterministic unit ids and a durable journal of finished batches.

Every unit of work (one prompt) has an id derived from what decides its output: method, source,
template hash, teacher id, sampling parameters and its index `k`. Units are cut into batches by
position in the (deterministic) unit list; each finished batch is written to
`journal/<phase>/part-<hash of its ids>.jsonl` through a temporary file, fsync and rename, so a batch is in
the journal entirely or not at all. A restarted run reads the journal, skips the batches whose ids
are all done and generates the rest in the same batches as an uninterrupted run would, with the
same per-batch seed: its final output is byte-identical. distilabel, by contrast, resumes per step
buffer and loses (or repeats) rows of a half-written batch (#1065).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.artifacts import stable_hash

SUFFIX, PARTIAL = ".jsonl", ".partial"


@dataclass(frozen=True)
class Unit:
    """One prompt to the teacher. `payload` travels with the result (what the method needs next)."""

    id: str
    prompt: Any  # chat messages (list of dicts) or a raw prefix (str)
    raw: bool = False  # True: continue `prompt` as raw text (magpie), no chat template
    # the start of the last user message that other units share (doc_qa: the chunk); a local teacher
    # computes its KV once. It never changes the output, only how often the teacher recomputes it.
    context: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


def unit_id(method: str, source: str, template_hash: str, teacher: str, sampling: dict[str, Any], k: int) -> str:
    return stable_hash({"method": method, "source": source, "template": template_hash, "teacher": teacher,
                        "sampling": sampling, "k": k})[:24]


def batch_seed(ids: Sequence[str]) -> int:
    return int(stable_hash(list(ids))[:8], 16)


class Journal:
    """The finished results of one phase, by unit id."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        for part in sorted(folder.glob(f"part-*{SUFFIX}")):
            for line in part.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # cannot happen with rename-committed parts; tolerated anyway
                    continue
                self.done.setdefault(row["id"], row)
        for stale in folder.glob(f"*{PARTIAL}"):  # a batch cut short by a kill: regenerated
            stale.unlink()

    def commit(self, rows: list[dict[str, Any]]) -> None:
        # named by the batch's ids: two phases (or two calls) sharing a folder never overwrite each other
        final = self.folder / f"part-{stable_hash([r['id'] for r in rows])[:20]}{SUFFIX}"
        tmp = final.with_name(final.name + PARTIAL)
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for row in rows:
            self.done[row["id"]] = row


Generate = Callable[[list[Unit], int], list[dict[str, Any]]]


@dataclass
class PhaseStats:
    units: int = 0
    generated: int = 0
    resumed: int = 0
    new_tokens: int = 0
    seconds: float = 0.0


def run_phase(units: list[Unit], journal: Journal, generate: Generate, batch_size: int,
              stats: PhaseStats | None = None) -> list[dict[str, Any]]:
    """Results of `units`, in unit order: journaled ones reused, the rest generated batch by batch.
    `generate(batch, seed)` returns one {"text", "new_tokens", "seconds"} per unit."""
    import time

    stats = stats if stats is not None else PhaseStats()
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate unit ids in one phase: two units would share one journal entry")
    stats.units += len(units)
    for first in range(0, len(units), batch_size):
        batch = units[first:first + batch_size]
        todo = [u for u in batch if u.id not in journal.done]
        if not todo:
            stats.resumed += len(batch)
            continue
        t0 = time.perf_counter()
        outs = generate(todo, batch_seed([u.id for u in batch]))
        stats.seconds += time.perf_counter() - t0
        stats.generated += len(todo)
        stats.new_tokens += sum(o.get("new_tokens", 0) for o in outs)
        journal.commit([{"id": u.id, "payload": u.payload, "text": o["text"],
                                "new_tokens": o.get("new_tokens", 0)} for u, o in zip(todo, outs)])
    return [journal.done[i] for i in ids]
