"""Turn packed rows into model inputs that keep every document's attention to itself.

Position ids restart at 0 at each segment start; with no attention mask and `use_cache=False`,
transformers derives a block-diagonal causal mask from them (and flash-attention uses varlen
kernels). Padding forms its own "segment", so real tokens never attend to it, and its labels
are ignored. The first token of each segment is never a target: predicting it from the previous
document would leak across the boundary.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100


def packed_rows(dataset, indices: list[int]) -> list[dict[str, Any]]:
    """The rows at `indices` of a packed dataset, in the shape `collate_packed` takes (SFT rows
    also carry `loss_mask`: 1 on the assistant tokens that are targets)."""
    cols = dataset[indices]
    keys = [k for k in ("input_ids", "segment_lengths", "segment_streams", "loss_mask") if k in cols]
    return [{k: cols[k][i] for k in keys} for i in range(len(indices))]


def row_targets(row: dict[str, Any]) -> int:
    """Predicted tokens in one packed row: every token of a segment but its first, and with a
    `loss_mask` only the masked-in ones."""
    mask = row.get("loss_mask")
    if mask is None:
        return sum(n - 1 for n in row["segment_lengths"])
    total, start = 0, 0
    for n in row["segment_lengths"]:
        total += sum(mask[start + 1:start + n])
        start += n
    return total


def collate_packed(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    streams = torch.full((batch, width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[b, :n] = torch.tensor(row["input_ids"])
        labels[b, :n] = input_ids[b, :n]
        if "loss_mask" in row:  # SFT: only assistant tokens are targets
            labels[b, :n][torch.tensor(row["loss_mask"]) == 0] = IGNORE
        start = 0
        for length, stream in zip(row["segment_lengths"], row["segment_streams"]):
            position_ids[b, start:start + length] = torch.arange(length)
            labels[b, start] = IGNORE
            streams[b, start:start + length] = stream
            start += length
        position_ids[b, n:] = torch.arange(width - n)  # padding: its own segment
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "streams": streams}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy (0 where ignored), aligned so position t scores labels[t] from t-1."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="none")
    return loss.view(shift_labels.shape)


def stream_sums(losses: torch.Tensor, labels: torch.Tensor, streams: torch.Tensor,
                n_streams: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, token count) per stream, for per-stream loss curves under packing."""
    target_streams = streams[:, 1:]
    valid = labels[:, 1:] != IGNORE
    idx = target_streams[valid]
    sums = torch.zeros(n_streams, dtype=torch.float64).index_add_(0, idx, losses[valid].double())
    counts = torch.zeros(n_streams, dtype=torch.float64).index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return sums, counts
