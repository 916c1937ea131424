"""One teacher pass over the training rows: top-k log-probabilities per token, stored as safetensors
(fp16 values, int32 ids) and reused by every student trained on the same rows and teacher."""

from __future__ import annotations

from pathlib import Path

import torch

from domaintune.training.collate import collate_packed, packed_rows


def build(teacher, dataset, rows: list[int], top_k: int, temperature: float, pad_id: int, path: Path | None,
          batch: int = 4) -> dict[str, torch.Tensor]:
    """{f"{row}.values", f"{row}.ids"} for each row index, computed once (cached at `path` unless None)."""
    from safetensors.torch import load_file, save_file

    if path is not None and path.is_file():
        cached = load_file(str(path))
        if all(f"{r}.ids" in cached for r in rows):
            return cached
    out: dict[str, torch.Tensor] = {}
    teacher.eval()
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            b = collate_packed(packed_rows(dataset, chunk), pad_id)
            logits = teacher(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            logp = (logits.float() / temperature).log_softmax(-1)
            values, ids = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
            for j, r in enumerate(chunk):
                n = len(dataset[r]["input_ids"])
                out[f"{r}.values"] = values[j, :n].half().contiguous()
                out[f"{r}.ids"] = ids[j, :n].int().contiguous()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, str(path))
    return out


def batch_targets(cache: dict, rows: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs [B, width, k], ids [B, width, k]) padded to the collated width."""
    top_k = cache[f"{rows[0]}.ids"].shape[-1]
    values = torch.full((len(rows), width, top_k), -1e4)
    ids = torch.zeros((len(rows), width, top_k), dtype=torch.long)
    for j, r in enumerate(rows):
        v, i = cache[f"{r}.values"], cache[f"{r}.ids"]
        values[j, :len(v)] = v.float()
        ids[j, :len(i)] = i.long()
    return values, ids


def topk_kl(student_logits: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Mean forward KL(teacher_top-k ‖ student) over target positions (teacher renormalized over its
    top-k; student log-probs over the full vocabulary, gathered at the teacher's ids), times T²."""
    from domaintune.training.collate import IGNORE

    logq = (student_logits[:, :-1].float() / temperature).log_softmax(-1).gather(-1, ids[:, :-1])
    p_log = values[:, :-1].log_softmax(-1)  # renormalize the teacher's top-k
    kl = (p_log.exp() * (p_log - logq)).sum(-1)
    mask = labels[:, 1:] != IGNORE
    return (kl * mask).sum() / mask.sum().clamp(min=1) * temperature**2
