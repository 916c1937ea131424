"""The corpus-wide phase after the shards: whole-corpus steps (unique ids, exact dedup),
near-duplicate clustering, and the near-dup-aware, stratified split.

Everything here is ordered by content and position, never by shard timing, so the outputs are
byte-identical however the shards ran. The keeper of a duplicate set is the best copy: highest
`meta.quality_score` (when a quality step sets it), then (for near-duplicates) the longest text,
then the earliest in reading order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domaintune.config import DataConfig
from domaintune.data.dedup import NEAR_DUPLICATE
from domaintune.data.engine import text_sha
from domaintune.data.records import Record, Reject
from domaintune.data.shards import Dropped, Kept
from domaintune.data.split import SPLITS, assign_group_splits, stratum
from domaintune.data.steps import Step, apply_steps
from domaintune.governance.neardup import cluster


@dataclass
class Merged:
    splits: dict[str, dict[str, list[Kept]]]  # stream -> split -> records in reading order
    dropped: list[Dropped]  # in reading order
    duplicate_of: dict[str, str] = field(default_factory=dict)  # near-duplicate id -> keeper id
    clusters: list[dict[str, Any]] = field(default_factory=list)  # largest near-dup clusters


def quality(rec: Record) -> float:
    score = rec.meta.get("quality_score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0


def run_corpus_steps(kept: list[Kept], steps: list[Step]) -> tuple[list[Kept], list[Dropped]]:
    survivors, dropped = [], []
    for k in sorted(kept, key=lambda k: (-quality(k.record), k.pos)):
        def rejected(step: Step, rej: Reject, k: Kept = k) -> None:
            dropped.append(Dropped(k.pos, k.record.id, step.name, k.orig, rej))

        if isinstance(apply_steps(k.record, steps, on_reject=rejected), Record):
            survivors.append(k)
    survivors.sort(key=lambda k: k.pos)
    return survivors, dropped


def near_duplicates(kept: list[Kept], data: DataConfig) -> dict[str, str]:
    if not data.near_dedup.enabled or len(kept) < 2:
        return {}
    order = sorted(kept, key=lambda k: (-quality(k.record), -len(k.record.text), k.pos))
    return cluster([k.record.id for k in order], (k.sig for k in order), data.near_dedup.threshold,
                   data.near_dedup.num_perm, [k.record.text for k in order], data.near_dedup.ngram)


def _clusters(duplicate_of: dict[str, str], top: int = 20) -> list[dict[str, Any]]:
    members: dict[str, list[str]] = {}
    for dup, keeper in duplicate_of.items():
        members.setdefault(keeper, []).append(dup)
    ranked = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{"keeper": k, "duplicates": sorted(v), "size": len(v) + 1} for k, v in ranked[:top]]


def _groups(kept: list[Kept], duplicate_of: dict[str, str]) -> dict[str, str]:
    """id -> group key: near-duplicates and identical texts (if exact dedup is off) share one."""
    first_with_text: dict[str, str] = {}
    group = {}
    for k in kept:
        same = first_with_text.setdefault(text_sha(k.record.text), k.record.id)
        group[k.record.id] = duplicate_of.get(k.record.id, same)
    return group


def split_records(kept: list[Kept], duplicate_of: dict[str, str], data: DataConfig, seed: int,
                  streams: list[str]) -> dict[str, dict[str, list[Kept]]]:
    group = _groups(kept, duplicate_of)
    by_id = {k.record.id: k.record for k in kept}
    sizes: dict[tuple[str, str], dict[str, int]] = {}
    for k in kept:
        home = by_id[group[k.record.id]]  # a group is split with its keeper's stream and stratum
        key = (home.stream, stratum(home.meta, home.source_name, data.split.stratify))
        bucket = sizes.setdefault(key, {})
        bucket[group[k.record.id]] = bucket.get(group[k.record.id], 0) + 1
    label: dict[str, str] = {}
    for bucket in sizes.values():
        label.update(assign_group_splits(bucket, data.split, seed))
    out = {s: {p: [] for p in SPLITS} for s in streams}
    for k in kept:
        out[k.record.stream][label[group[k.record.id]]].append(k)
    return out


def merge(kept: list[Kept], dropped: list[Dropped], corpus_steps: list[Step], data: DataConfig,
          seed: int, streams: list[str]) -> Merged:
    survivors, corpus_dropped = run_corpus_steps(kept, corpus_steps)
    duplicate_of = near_duplicates(survivors, data)
    if data.near_dedup.action == "drop" and duplicate_of:
        for k in survivors:
            keeper = duplicate_of.get(k.record.id)
            if keeper is not None:
                rej = Reject.of(k.record, NEAR_DUPLICATE, f"near-duplicate of kept record '{keeper}' (estimated "
                                f"Jaccard >= data.near_dedup.threshold={data.near_dedup.threshold:g})")
                corpus_dropped.append(Dropped(k.pos, k.record.id, "dedup.near", k.orig, rej))
        survivors = [k for k in survivors if k.record.id not in duplicate_of]
    splits = split_records(survivors, duplicate_of, data, seed, streams)
    all_dropped = sorted(dropped + corpus_dropped, key=lambda d: d.pos)
    return Merged(splits, all_dropped, duplicate_of, _clusters(duplicate_of))
