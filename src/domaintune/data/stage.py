"""Stage 1, data: read sources -> per-record steps (sharded, datatrove) -> exact and near dedup
-> near-dup-aware stratified split -> write streams, rejects, lineage, report.

Every record either reaches a split file or is written to rejects.jsonl with its reason, so
`records == kept + rejected + duplicates` always holds and nothing disappears silently.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from domaintune.artifacts import RunDir, StageResult, atomic_write_json
from domaintune.config import Config, DataConfig
from domaintune.console import console
from domaintune.data.dedup import EXACT_DUPLICATE, NEAR_DUPLICATE, ExactDedup, UniqueIds
from domaintune.data.filters import MinChars
from domaintune.data.lineage import LINEAGE, find_entry, trace, write_lineage
from domaintune.data.merge import Merged, merge
from domaintune.data.pii import RedactPii
from domaintune.data.quality import QualityFilter
from domaintune.data.records import Record, SourceContext
from domaintune.data.report import (
    EXAMPLES_PER_REASON,
    REPORT_HTML,
    LengthHistogram,
    approx_tokens,
    build_report,
    print_summary,
    write_report,
)
from domaintune.data.rules import text_steps
from domaintune.data.shards import Dropped, run_shards, step_counts
from domaintune.data.sources import resolve_sources
from domaintune.data.split import SPLITS
from domaintune.data.stats import StageStats
from domaintune.data.steps import Step
from domaintune.data.writers import JsonlWriter
from domaintune.errors import DataError

STAGE = "data"
REJECTS, STATS, STREAMS = "rejects.jsonl", "stats.json", "streams.json"
Sources = list[tuple[SourceContext, list[Path]]]


def inputs(cfg: Config) -> list[str]:
    """Every file the stage reads, sorted, for the runner's fingerprint."""
    files = {f for _, paths in resolve_sources(cfg.data, exclude=cfg.run_path) for f in paths}
    # The rules file, PII dictionaries and salt change the output as much as the sources do.
    governance = [cfg.data.rules_file, cfg.data.pii.salt_file, *cfg.data.pii.dictionaries.values()]
    files |= {Path(p) for p in governance if p and Path(p).is_file()}
    return sorted(str(f) for f in files)


def build_steps(data: DataConfig) -> list[Step]:
    """The per-record steps in order. Filters run before the id/dedup checks so that a rejected
    record never claims an id or a text that a later, valid copy could have used. PII redaction
    runs right after normalization: every later reject then quotes redacted text in rejects.jsonl,
    the filters judge the text that will be trained on, and with action=mask documents that differ
    only in personal data collapse as exact duplicates."""
    steps: list[Step] = text_steps(data)
    if data.pii.enabled:
        steps.append(RedactPii(data.pii))
    steps += [MinChars(data.min_chars), QualityFilter(data.quality), UniqueIds()]
    if data.exact_dedup:
        steps.append(ExactDedup())
    return steps


def partition_steps(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """(per-record steps, corpus-wide steps): the first run inside the shards, in parallel; the
    second (unique ids, exact dedup) need every record and run once after the shards."""
    corpus = [s for s in steps if getattr(s, "corpus_wide", False)]
    return [s for s in steps if not getattr(s, "corpus_wide", False)], corpus


class KeptPass:
    """Everything the outputs need from the kept texts, gathered in the one pass that writes the split
    files: counts per source and stream, tokens, lengths, the steps that changed records."""

    def __init__(self, sources: Sources, streams: list[str]):
        self.contexts = [ctx for ctx, _ in sources]
        self.stats = StageStats(sources)
        self.changed: Counter = Counter()
        self.tokens: Counter = Counter()  # keyed by stream name and by "source:<name>"
        self.lengths = {s: LengthHistogram() for s in streams}
        self.chars: Counter = Counter()
        self.removed: Counter = Counter()
        self.examples: list[dict[str, Any]] = []  # the first rejects of each reason, in reading order
        self._per_reason: Counter = Counter()

    def add_kept(self, pos: tuple, obj: dict[str, Any]) -> None:
        src = obj["source"]
        rec = Record(obj["id"], obj["text"], obj["stream"], src["name"], src["path"], src["line"], obj["steps"],
                     obj["meta"])
        self.stats.add(self.contexts[pos[0]], rec)
        self.changed.update(rec.steps)
        n = approx_tokens(rec.text)
        self.tokens[rec.stream] += n
        self.tokens["source:" + rec.source_name] += n
        self.lengths[rec.stream].add(rec.chars)
        self.chars[rec.stream] += rec.chars

    def add_dropped(self, d: Dropped) -> None:
        self.stats.add(self.contexts[d.pos[0]], d.reject)
        self.removed[(d.step or "read", d.reject.reason)] += 1
        if self._per_reason[d.reject.reason] < EXAMPLES_PER_REASON:
            self._per_reason[d.reject.reason] += 1
            self.examples.append(d.reject.to_json())

    def step_rows(self) -> list[dict[str, Any]]:
        """Per step: records it changed (among those kept) and records it removed, by reason."""
        rows = [{"step": s, "changed": n, "reason": "", "removed": 0} for s, n in sorted(self.changed.items())]
        rows += [{"step": s, "changed": "", "reason": r, "removed": n} for (s, r), n in sorted(self.removed.items())]
        return rows


def _report(out: Path, summary: dict[str, Any], merged: Merged, seen: KeptPass) -> None:
    sources = [{**src, "approx_tokens": seen.tokens["source:" + src["name"]]} for src in summary["sources"]]
    by_stream = {s: seen.tokens[s] for s in merged.streams}
    histograms = {s: h.to_json() for s, h in seen.lengths.items()}
    write_report(out, build_report({**summary, "sources": sources}, summary["steps"], histograms, by_stream,
                                   merged.clusters(), seen.examples))


def _check_rejects(stats: StageStats, limit: float, rejects_path: Path) -> None:
    if stats.reject_fraction <= limit:
        return
    total = stats.total
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(total.reasons.items())
                        if r not in (EXACT_DUPLICATE, NEAR_DUPLICATE))
    raise DataError(
        f"{total.rejected} of {total.records} records were rejected ({stats.reject_fraction:.1%}), "
        f"more than data.max_reject_fraction={limit:g} ({reasons}; duplicates not counted). "
        f"See {rejects_path} for each record and reason; fix the data or the source settings "
        "(text_field, format, min_chars), or raise data.max_reject_fraction."
    )


def _check_train(docs: dict[str, dict[str, int]], cfg: Config, out: Path) -> None:
    empty = [s for s, parts in docs.items() if not parts["train"]]
    if not empty:
        return
    problems = []
    for stream in empty:
        used_by = [f"data.sources[{i}]" for i, s in enumerate(cfg.data.sources)
                   if s.stream == stream]
        kept = sum(docs[stream].values())
        problems.append(f"stream '{stream}' ({', '.join(used_by)}) has 0 train documents "
                        f"({kept} kept in all)")
    raise DataError("; ".join(problems) + f". Check {REJECTS} and {STATS} in {out}; add data, "
                    "lower data.min_chars, or raise data.split.train.")


def _write_splits(out: Path, merged: Merged, seen: KeptPass, stack: ExitStack) -> dict[str, Any]:
    """Write every split file (each becomes visible only when `stack` closes without an error) and
    gather what the stats and the report need from the kept texts on the way."""
    streams: dict[str, Any] = {}
    for stream in merged.streams:
        entry: dict[str, Any] = {}
        for split in SPLITS:
            rel = f"{stream}/{split}.jsonl"
            writer = stack.enter_context(JsonlWriter(out / rel))
            for pos, obj in merged.split_records(stream, split):
                writer.write(obj)
                seen.add_kept(pos, obj)
            entry[split] = rel
        streams[stream] = entry
    return streams


def _merged(cfg: Config, sources: Sources, out: Path) -> tuple[Merged, dict[str, dict[str, int]]]:
    record_steps, corpus_steps = partition_steps(build_steps(cfg.data))
    with console.status(f"data: reading {sum(len(f) for _, f in sources):,} files through "
                        f"{len(record_steps)} steps (datatrove, {cfg.data.engine.executor} executor)…"):
        shard_dir = run_shards(cfg.data, sources, record_steps, out)
    streams = list(dict.fromkeys(ctx.stream for ctx, _ in sources))
    with console.status("data: dedup and split (on-disk index)…"):
        return merge(shard_dir, out, corpus_steps, cfg.data, cfg.seed, streams), step_counts(shard_dir)


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    out = run_dir.stage_dir(STAGE)
    (out / STREAMS).unlink(missing_ok=True)  # a failed re-run must not leave the old index behind
    sources = resolve_sources(cfg.data, exclude=run_dir.root)
    merged, counts = _merged(cfg, sources, out)
    with merged, ExitStack() as splits:
        seen = KeptPass(sources, merged.streams)
        with JsonlWriter(out / REJECTS) as rejects:
            for d in merged.dropped():
                rejects.write(d.reject.to_json())
                seen.add_dropped(d)
        write_lineage(out / LINEAGE, merged)
        streams = _write_splits(out, merged, seen, splits)
        stats = seen.stats
        docs = merged.docs()
        clusters, duplicates = merged.near_dedup_counts()
        summary = {**stats.to_json(docs), "steps": seen.step_rows(), "step_counts": counts,
                   "near_dedup": {"clusters": clusters, "duplicates": duplicates,
                                  "action": cfg.data.near_dedup.action}}
        atomic_write_json(out / STATS, summary)  # written before the checks: they point to it
        _report(out, summary, merged, seen)
        _check_rejects(stats, cfg.data.max_reject_fraction, out / REJECTS)
        _check_train(docs, cfg, out)
    for stream, entry in streams.items():  # the split files are in place: the checks passed
        entry["docs"] = docs[stream]
        entry["chars"] = seen.chars[stream]
    atomic_write_json(out / STREAMS, streams)
    print_summary(streams, summary["total"])
    total = stats.total
    metrics = {**summary["total"], "streams": docs}
    return StageResult(
        outputs={"streams": STREAMS, "rejects": REJECTS, "stats": STATS, "lineage": LINEAGE,
                 "report": REPORT_HTML},
        metrics=metrics,
        summary=f"{total.kept:,} docs kept in {len(streams)} streams, {total.rejected:,} rejected, "
                f"{total.duplicates:,} duplicates",
    )


def trace_record(cfg: Config, run_dir: RunDir, record_id: str) -> dict[str, Any]:
    """`domaintune data trace`: a record's original text, each step's change, and its outcome."""
    entry = find_entry(run_dir.root / STAGE / LINEAGE, record_id)
    sources = resolve_sources(cfg.data, exclude=run_dir.root)
    record_steps, _ = partition_steps(build_steps(cfg.data))
    return trace(entry, sources[entry["source_index"]][0], record_steps)
