"""Quality checks on trained models: held-out loss per document, and evidence that our packed
batches keep attention inside each document (packed loss == the document's loss alone)."""

from __future__ import annotations

import statistics

import torch

from domaintune.mix.sampling import Doc


def _doc_token_losses(model, ids: list[int]) -> torch.Tensor:
    """Per-token loss of one document run alone (no padding, no neighbours)."""
    x = torch.tensor([ids])
    logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")


@torch.no_grad()
def heldout_loss(model, docs: list[Doc]) -> dict[str, float]:
    """Mean of per-document mean losses (each document alone), and the token-weighted mean."""
    was_training = model.training
    model.eval()
    per_doc = [_doc_token_losses(model, d.ids) for d in docs]
    model.train(was_training)
    return {"doc_mean": statistics.fmean(float(t.mean()) for t in per_doc),
            "token_mean": float(torch.cat(per_doc).mean())}


def _busiest_batch(dataset, batch_tokens: int, seed: int) -> list[int]:
    """The micro-batch (as train_loop would form it) holding the most documents."""
    from domaintune.training.loop import epoch_batches

    batches = epoch_batches(list(dataset["bucket"]), list(dataset["length"]), 1, batch_tokens, seed, 0)
    counts = [sum(len(dataset[i]["segment_lengths"]) for i in b) for b in batches]
    return batches[counts.index(max(counts))]


def _packed_doc_losses(model, rows: list[dict], pad_id: int, use_cache: bool) -> list[torch.Tensor]:
    from domaintune.training.collate import collate_packed, token_losses

    b = collate_packed(rows, pad_id)
    logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=use_cache).logits
    losses = token_losses(logits, b["labels"])
    out = []
    for r, row in enumerate(rows):
        start = 0
        for n in row["segment_lengths"]:
            out.append(losses[r, start:start + n - 1])  # targets 2..n of the segment
            start += n
    return out


@torch.no_grad()
def cross_document_check(model, dataset, batch_tokens: int, seed: int, pad_id: int) -> dict:
    """Per-document loss inside one packed batch vs the same document alone. With
    `use_cache=True` (the DESIGN pitfall) the same batch shows what leakage would look like."""
    model.eval()
    indices = _busiest_batch(dataset, batch_tokens, seed)
    rows = [dataset[i] for i in indices]
    alone = [_doc_token_losses(model, list(row["input_ids"][s:s + n]))
             for row in rows for s, n in zip(_starts(row["segment_lengths"]), row["segment_lengths"])]
    result = {"rows": len(rows), "docs": len(alone), "tokens": sum(len(r["input_ids"]) for r in rows)}
    for name, use_cache in (("use_cache=False", False), ("use_cache=True", True)):
        packed = _packed_doc_losses(model, rows, pad_id, use_cache)
        result[name] = {
            "max_abs_doc_loss_diff": max(abs(float(p.mean() - a.mean())) for p, a in zip(packed, alone)),
            "max_abs_token_loss_diff": max(float((p - a).abs().max()) for p, a in zip(packed, alone)),
        }
    return result


def _starts(lengths: list[int]) -> list[int]:
    out, pos = [], 0
    for n in lengths:
        out.append(pos)
        pos += n
    return out
