"""Deterministic train/val/test split of one stream.

Documents are ordered by a hash of (seed, id) and cut by ratio: the split of a document
depends only on the seed and the ids in its stream, never on reading order or the machine.
Splitting each stream on its own keeps every stream present in val and test (stratified).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

from domaintune.artifacts import stable_hash
from domaintune.config import SplitConfig

SPLITS = ("train", "val", "test")


def _round(x: float) -> int:
    # Half-up rather than Python's half-to-even: easier to predict from the ratios.
    return math.floor(x + 0.5)


def split_sizes(n: int, ratios: SplitConfig) -> dict[str, int]:
    """Docs per split. With >= 3 docs, val and test get at least one each when their ratio is
    > 0 (an empty eval split silently turns evaluation off), and train keeps at least one when
    its ratio is > 0."""
    held = {"val": _round(n * ratios.val), "test": _round(n * ratios.test)}
    if n >= 3:
        for split in held:
            if getattr(ratios, split) > 0:
                held[split] = max(held[split], 1)
    room = n - (1 if ratios.train > 0 and n > 0 else 0)
    while held["val"] + held["test"] > room:
        held["val" if held["val"] >= held["test"] else "test"] -= 1
    return {"train": n - held["val"] - held["test"], **held}


def assign_splits(ids: Sequence[str], ratios: SplitConfig, seed: int) -> list[str]:
    """The split name of each id, aligned with `ids` (so callers keep their own order)."""
    sizes = split_sizes(len(ids), ratios)
    order = sorted(range(len(ids)), key=lambda i: stable_hash([seed, ids[i]]))
    labels = [""] * len(ids)
    cursor = 0
    for split in SPLITS:
        for i in order[cursor:cursor + sizes[split]]:
            labels[i] = split
        cursor += sizes[split]
    return labels


def assign_group_splits(groups: dict[str, int], ratios: SplitConfig, seed: int) -> dict[str, str]:
    """Split whole groups (e.g. a near-duplicate cluster: key -> number of documents) so that no
    group straddles two splits. Groups are ordered by hash(seed, key) and fill train, val, test in
    turn up to the document counts of `split_sizes`; with groups of one this is `assign_splits`."""
    order = sorted(groups, key=lambda key: group_hash(seed, key))
    return dict(fill_splits(((key, groups[key]) for key in order), sum(groups.values()), ratios))


def group_hash(seed: int, key: str) -> str:
    """The order key of a group in `assign_group_splits`."""
    return stable_hash([seed, key])


def fill_splits(ordered: Iterable[tuple[str, int]], total: int, ratios: SplitConfig) -> Iterator[tuple[str, str]]:
    """(key, split) for groups already in `group_hash` order, `total` documents in all: the streaming
    core of `assign_group_splits`, for callers that sort the groups on disk."""
    sizes = split_sizes(total, ratios)
    filled = dict.fromkeys(SPLITS, 0)
    current = 0
    for key, n in ordered:
        while current < len(SPLITS) - 1 and filled[SPLITS[current]] >= sizes[SPLITS[current]]:
            current += 1
        filled[SPLITS[current]] += n
        yield key, SPLITS[current]


def stratum(rec_meta: dict, source: str, stratify: str) -> str:
    """The stratum of a record within its stream for `data.split.stratify`."""
    if stratify == "stream":
        return ""
    if stratify == "source":
        return source
    value = rec_meta.get(stratify.removeprefix("meta."))
    return "" if value is None else str(value)
