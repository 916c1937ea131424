"""Stage 1, data: read sources -> normalize -> filter -> dedup -> split -> write streams.

Every record either reaches a split file or is written to rejects.jsonl with its reason, so
`records == kept + rejected + duplicates` always holds and nothing disappears silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domaintune.artifacts import RunDir, StageResult, atomic_write_json
from domaintune.config import Config, DataConfig
from domaintune.console import progress
from domaintune.data.dedup import EXACT_DUPLICATE, ExactDedup, UniqueIds
from domaintune.data.filters import MinChars
from domaintune.data.pii import RedactPii
from domaintune.data.quality import QualityFilter
from domaintune.data.readers import read_file
from domaintune.data.records import Record, Reject, SourceContext
from domaintune.data.report import print_summary
from domaintune.data.rules import text_steps
from domaintune.data.sources import resolve_sources
from domaintune.data.split import SPLITS, assign_splits
from domaintune.data.stats import StageStats
from domaintune.data.steps import Step, apply_steps
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


def _read_all(sources: Sources, steps: list[Step], stats: StageStats,
              rejects_path: Path) -> dict[str, list[Record]]:
    """Stream every record through the steps; kept records are grouped by stream."""
    kept: dict[str, list[Record]] = {ctx.stream: [] for ctx, _ in sources}
    with JsonlWriter(rejects_path) as rejects, progress() as bar:
        for ctx, files in sources:
            task = bar.add_task(ctx.label, total=len(files), info="")
            for path in files:
                for item in _process(path, ctx, steps):
                    stats.add(ctx, item)
                    if isinstance(item, Reject):
                        rejects.write(item.to_json())
                    else:
                        kept[ctx.stream].append(item)
                records = stats.source_tally(ctx).records
                bar.update(task, advance=1, info=f"{records:,} records")
    return kept


def _process(path: Path, ctx: SourceContext, steps: list[Step]) -> Iterator[Record | Reject]:
    for item in read_file(path, ctx):
        yield apply_steps(item, steps) if isinstance(item, Record) else item


def _split(kept: dict[str, list[Record]], cfg: Config) -> dict[str, dict[str, list[Record]]]:
    """Stratified: each stream is split on its own; records keep their reading order."""
    out = {}
    for stream, records in kept.items():
        labels = assign_splits([r.id for r in records], cfg.data.split, cfg.seed)
        out[stream] = {s: [r for r, lab in zip(records, labels) if lab == s] for s in SPLITS}
    return out


def _check_rejects(stats: StageStats, limit: float, rejects_path: Path) -> None:
    if stats.reject_fraction <= limit:
        return
    total = stats.total
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(total.reasons.items())
                        if r != EXACT_DUPLICATE)
    raise DataError(
        f"{total.rejected} of {total.records} records were rejected ({stats.reject_fraction:.1%}), "
        f"more than data.max_reject_fraction={limit:g} ({reasons}; exact duplicates not counted). "
        f"See {rejects_path} for each record and reason; fix the data or the source settings "
        "(text_field, format, min_chars), or raise data.max_reject_fraction."
    )


def _check_train(splits: dict[str, dict[str, list[Record]]], cfg: Config, out: Path) -> None:
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


def _write_streams(out: Path, splits: dict[str, dict[str, list[Record]]]) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for stream, parts in splits.items():
        entry: dict[str, Any] = {}
        for split in SPLITS:
            rel = f"{stream}/{split}.jsonl"
            with JsonlWriter(out / rel) as writer:
                for rec in parts[split]:
                    writer.write(rec.to_json())
            entry[split] = rel
        entry["docs"] = {s: len(parts[s]) for s in SPLITS}
        entry["chars"] = sum(len(r.text) for docs in parts.values() for r in docs)
        streams[stream] = entry
    return streams


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    out = run_dir.stage_dir(STAGE)
    (out / STREAMS).unlink(missing_ok=True)  # a failed re-run must not leave the old index behind
    sources = resolve_sources(cfg.data, exclude=run_dir.root)
    stats = StageStats(sources)
    kept = _read_all(sources, build_steps(cfg.data), stats, out / REJECTS)
    splits = _split(kept, cfg)
    docs = {s: {p: len(recs) for p, recs in parts.items()} for s, parts in splits.items()}
    summary = stats.to_json(docs)
    atomic_write_json(out / STATS, summary)  # written before the checks: they point to it
    _check_rejects(stats, cfg.data.max_reject_fraction, out / REJECTS)
    _check_train(splits, cfg, out)
    streams = _write_streams(out, splits)
    atomic_write_json(out / STREAMS, streams)
    print_summary(streams, summary["total"])
    total = stats.total
    metrics = {**summary["total"], "streams": docs}
    return StageResult(
        outputs={"streams": STREAMS, "rejects": REJECTS, "stats": STATS},
        metrics=metrics,
        summary=f"{total.kept:,} docs kept in {len(streams)} streams, {total.rejected:,} rejected, "
                f"{total.duplicates:,} duplicates",
    )
