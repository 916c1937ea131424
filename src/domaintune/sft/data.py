"""SFT data for the training loop: conversations -> token ids + assistant masks -> packed rows.

Rows have the packed-row shape the CPT loop already trains on (input_ids, segment_lengths,
segment_streams, bucket, length) plus `loss_mask`, so SFT reuses the same loop, checkpoints,
resume and guards. Packing is best-fit decreasing into rows of `max_len` tokens with segment
boundaries (position ids restart per example: no cross-example attention); without packing
each row holds one example and batches group similar lengths (padding-free in effect).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.config import SFTConfig
from domaintune.console import progress
from domaintune.instruct.formats import read_conversations
from domaintune.instruct.masking import Encoded, TemplateError
from domaintune.instruct.truncation import fit
from domaintune.packing import pack


@dataclass
class Example:
    ids: list[int]
    mask: list[int]
    stream: int


@dataclass
class SFTData:
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # fits / history_trimmed / answer_cut / dropped
    rows_read: int = 0


def source_names(sft: SFTConfig) -> list[str]:
    return [d.name or Path(d.path).stem for d in sft.data]


def split_rows(n: int, val_fraction: float, seed: int, salt: str) -> set[int]:
    """Indices held out for validation: a seeded sample per file (at least one when asked for)."""
    if not val_fraction or n < 2:
        return set()
    k = max(1, round(n * val_fraction))
    return set(random.Random(f"{seed}:{salt}").sample(range(n), k))


def load_sft_data(sft: SFTConfig, tokenizer, seed: int) -> SFTData:
    out = SFTData(streams=source_names(sft))
    with progress() as bar:
        for stream, (name, src) in enumerate(zip(out.streams, sft.data)):
            read = read_conversations(Path(src.path), src.format)
            out.rows_read += len(read.conversations) + len(read.quarantined)
            out.quarantined += [q | {"source": name} for q in read.quarantined]
            val = split_rows(len(read.conversations), sft.val_fraction, seed, name)
            task = bar.add_task(f"tokenize {name}", total=len(read.conversations), info="")
            for i, conv in enumerate(read.conversations):
                _add(out, conv, stream, name, src.path, i in val, tokenizer, sft)
                bar.advance(task)
    return out


def _add(out: SFTData, conv, stream: int, name: str, path: str, is_val: bool, tokenizer, sft: SFTConfig) -> None:
    try:
        fitted = fit(tokenizer, conv, sft.max_len, sft.truncation)
    except TemplateError as exc:
        fitted = None
        reason = str(exc)
    else:
        reason = fitted.reason
    if fitted is not None:
        out.outcomes[fitted.outcome] += 1
    if fitted is None or fitted.encoded is None or not _has_targets(fitted.encoded):
        out.quarantined.append({"source": name, "path": path, "line": conv["source_line"],
                                "reason": reason or "no assistant tokens after templating", "row": conv["messages"]})
        return
    (out.val if is_val else out.train).append(Example(fitted.encoded.input_ids, fitted.encoded.loss_mask, stream))


def _has_targets(enc: Encoded) -> bool:
    return sum(enc.loss_mask[1:]) > 0


def pack_examples(examples: list[Example], max_len: int, packed: bool, seed: int) -> list[list[Example]]:
    """Best-fit decreasing: each example goes to the fullest row it still fits (else a new row)."""
    if not packed:
        return [[e] for e in examples]
    return [row.segments for row in pack(examples, [max_len], seed)]


def row_bucket(length: int, max_len: int, packed: bool) -> int:
    """Packed rows share one bucket (max_len); an unpacked row goes to the next power of two, so a
    token budget per micro-batch (batch_tokens // bucket rows) fits many short conversations."""
    return max_len if packed else min(max_len, max(16, 1 << (length - 1).bit_length()))


def to_dataset(rows: list[list[Example]], max_len: int, packed: bool = True):
    """A datasets.Dataset in the loop's packed-row shape."""
    from datasets import Dataset

    cols: dict[str, list] = {k: [] for k in ("input_ids", "loss_mask", "segment_lengths", "segment_streams",
                                             "bucket", "length")}
    for row in rows:
        cols["input_ids"].append([t for e in row for t in e.ids])
        cols["loss_mask"].append([m for e in row for m in e.mask])
        cols["segment_lengths"].append([len(e.ids) for e in row])
        cols["segment_streams"].append([e.stream for e in row])
        cols["length"].append(len(cols["input_ids"][-1]))
        cols["bucket"].append(row_bucket(cols["length"][-1], max_len, packed))
    return Dataset.from_dict(cols)
