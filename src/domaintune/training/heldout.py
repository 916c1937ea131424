"""Held-out loss per stream during training, on packed rows from the val split."""

from __future__ import annotations

import torch

from domaintune.models import evaluating
from domaintune.training.collate import IGNORE, collate_packed, packed_rows, stream_sums, token_losses


@torch.no_grad()
def heldout_losses(model, dataset, batches: list[list[int]], stream_names: tuple[str, ...], pad_id: int,
                   device) -> dict[str, float]:
    """Token-weighted loss per stream (`val/loss/<stream>`) and overall (`val/loss`)."""
    n = len(stream_names)
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    with evaluating(model):
        for indices in batches:
            b = {k: v.to(device) for k, v in collate_packed(packed_rows(dataset, indices), pad_id).items()}
            # use_cache=False: with a cache object transformers stops isolating packed documents
            logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            ss, cc = stream_sums(token_losses(logits, b["labels"]).cpu(), b["labels"].cpu(), b["streams"].cpu(), n)
            sums += ss
            counts += cc
    out = {f"val/loss/{name}": float(sums[i] / counts[i]) for i, name in enumerate(stream_names) if counts[i]}
    if counts.sum() > 0:
        out["val/loss"] = float(sums.sum() / counts.sum())
    return out


@torch.no_grad()
def heldout_accuracy(model, dataset, batches: list[list[int]], pad_id: int, device) -> float | None:
    """Share of target tokens (for SFT: assistant tokens) the model predicts exactly (greedy)."""
    correct = total = 0
    with evaluating(model):
        for indices in batches:
            b = {k: v.to(device) for k, v in collate_packed(packed_rows(dataset, indices), pad_id).items()}
            logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            labels = b["labels"][:, 1:]
            valid = labels != IGNORE
            correct += int((logits[:, :-1].argmax(-1) == labels)[valid].sum())
            total += int(valid.sum())
    return correct / total if total else None
