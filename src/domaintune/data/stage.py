"""Stage 1, data: read sources -> per-record steps (sharded, datatrove) -> exact and near dedup
-> near-dup-aware stratified split -> write streams, rejects, lineage, report.

Every record either reaches a split file or is written to rejects.jsonl with its reason, so
`records == kept + rejected + duplicates` always holds and nothing disappears silently.
"""

from __future__ import annotations

from collections import Counter
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
from domaintune.data.records import SourceContext
from domaintune.data.report import (
    REPORT_HTML,
    approx_tokens,
    build_report,
    length_histogram,
    print_summary,
    write_report,
)
from domaintune.data.rules import text_steps
from domaintune.data.shards import Kept, load_shards, run_shards
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


def _tally(sources: Sources, merged: Merged) -> StageStats:
    stats = StageStats(sources)
    contexts = [ctx for ctx, _ in sources]
    for parts in merged.splits.values():
        for kept in parts.values():
            for k in kept:
                stats.add(contexts[k.pos[0]], k.record)
    for d in merged.dropped:
        stats.add(contexts[d.pos[0]], d.reject)
    return stats


def _step_rows(merged: Merged) -> list[dict[str, Any]]:
    """Per step: records it changed (among those kept) and records it removed, by reason."""
    changed: Counter = Counter(step for parts in merged.splits.values() for kept in parts.values()
                               for k in kept for step in k.record.steps)
    removed: Counter = Counter((d.step or "read", d.reject.reason) for d in merged.dropped)
    rows = [{"step": s, "changed": n, "reason": "", "removed": 0} for s, n in sorted(changed.items())]
    rows += [{"step": s, "changed": "", "reason": r, "removed": n} for (s, r), n in sorted(removed.items())]
    return rows


def _report(out: Path, summary: dict[str, Any], merged: Merged) -> None:
    lengths: dict[str, list[int]] = {}
    tokens: Counter = Counter()  # keyed by stream name and by "source:<name>"
    for stream, parts in merged.splits.items():
        lengths[stream] = []
        for kept in parts.values():
            for k in kept:
                n = approx_tokens(k.record.text)
                tokens[stream] += n
                tokens["source:" + k.record.source_name] += n
                lengths[stream].append(len(k.record.text))
    sources = [{**src, "approx_tokens": tokens["source:" + src["name"]]} for src in summary["sources"]]
    by_stream = {s: tokens[s] for s in merged.splits}
    histograms = {s: length_histogram(v) for s, v in lengths.items()}
    rejects = [d.reject.to_json() for d in merged.dropped]
    write_report(out, build_report({**summary, "sources": sources}, _step_rows(merged), histograms, by_stream,
                                   merged.clusters, rejects))


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


def _check_train(splits: dict[str, dict[str, list[Kept]]], cfg: Config, out: Path) -> None:
    empty = [s for s, parts in splits.items() if not parts["train"]]
    if not empty:
        return
    problems = []
    for stream in empty:
        used_by = [f"data.sources[{i}]" for i, s in enumerate(cfg.data.sources)
                   if s.stream == stream]
        kept = sum(len(docs) for docs in splits[stream].values())
        problems.append(f"stream '{stream}' ({', '.join(used_by)}) has 0 train documents "
                        f"({kept} kept in all)")
    raise DataError("; ".join(problems) + f". Check {REJECTS} and {STATS} in {out}; add data, "
                    "lower data.min_chars, or raise data.split.train.")


def _write_streams(out: Path, splits: dict[str, dict[str, list[Kept]]]) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for stream, parts in splits.items():
        entry: dict[str, Any] = {}
        for split in SPLITS:
            rel = f"{stream}/{split}.jsonl"
            with JsonlWriter(out / rel) as writer:
                for k in parts[split]:
                    writer.write(k.record.to_json())
            entry[split] = rel
        entry["docs"] = {s: len(parts[s]) for s in SPLITS}
        entry["chars"] = sum(len(k.record.text) for docs in parts.values() for k in docs)
        streams[stream] = entry
    return streams


def _merged(cfg: Config, sources: Sources, out: Path) -> tuple[Merged, dict[str, dict[str, int]]]:
    record_steps, corpus_steps = partition_steps(build_steps(cfg.data))
    with console.status(f"data: reading {sum(len(f) for _, f in sources):,} files through "
                        f"{len(record_steps)} steps (datatrove, {cfg.data.engine.executor} executor)…"):
        shard_dir = run_shards(cfg.data, sources, record_steps, out)
    kept, dropped, counts = load_shards(shard_dir)
    streams = list(dict.fromkeys(ctx.stream for ctx, _ in sources))
    with console.status(f"data: dedup and split of {len(kept):,} records…"):
        return merge(kept, dropped, corpus_steps, cfg.data, cfg.seed, streams), counts


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    out = run_dir.stage_dir(STAGE)
    (out / STREAMS).unlink(missing_ok=True)  # a failed re-run must not leave the old index behind
    sources = resolve_sources(cfg.data, exclude=run_dir.root)
    merged, counts = _merged(cfg, sources, out)
    with JsonlWriter(out / REJECTS) as rejects:
        for d in merged.dropped:
            rejects.write(d.reject.to_json())
    write_lineage(out / LINEAGE, merged)
    stats = _tally(sources, merged)
    docs = {s: {p: len(recs) for p, recs in parts.items()} for s, parts in merged.splits.items()}
    summary = {**stats.to_json(docs), "steps": _step_rows(merged), "step_counts": counts,
               "near_dedup": {"clusters": len({v for v in merged.duplicate_of.values()}),
                              "duplicates": len(merged.duplicate_of), "action": cfg.data.near_dedup.action}}
    atomic_write_json(out / STATS, summary)  # written before the checks: they point to it
    _report(out, summary, merged)
    _check_rejects(stats, cfg.data.max_reject_fraction, out / REJECTS)
    _check_train(merged.splits, cfg, out)
    streams = _write_streams(out, merged.splits)
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
