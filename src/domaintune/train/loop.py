"""The training loop for packed causal-LM data (used by continual pre-training).

Plain and explicit (torchtune-style) rather than a Trainer subclass: per-stream loss under
packing, exact token-weighted gradient accumulation and deterministic batch order are easier
to guarantee when every step is visible. Device placement, mixed precision and distributed
launch go through accelerate's public API.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from domaintune.train.collate import IGNORE, collate_packed, stream_sums, token_losses


@dataclass(frozen=True)
class LoopSettings:
    batch_size: int
    batch_tokens: int | None
    grad_accum: int
    total_steps: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    max_grad_norm: float
    log_every: int
    eval_every: int | None
    seed: int
    stream_names: tuple[str, ...]
    pad_id: int


def rows_per_batch(bucket: int, batch_size: int, batch_tokens: int | None) -> int:
    """A fixed token budget per micro-batch keeps memory flat across length buckets."""
    return max(1, batch_tokens // bucket) if batch_tokens else batch_size


def epoch_batches(buckets: list[int], lengths: list[int], batch_size: int, batch_tokens: int | None,
                  seed: int, epoch: int) -> list[list[int]]:
    """One epoch of micro-batches (row indices), order shuffled per epoch.

    A batch holds rows of one bucket with similar lengths (the collator pads to the longest
    row in the batch, so grouping by length keeps padding near zero). Depends only on its
    arguments, so step k always sees the same rows: reproducible runs and exact resume.
    """
    gen = torch.Generator().manual_seed(seed + epoch)
    tiebreak = torch.randperm(len(buckets), generator=gen).tolist()
    order = sorted(range(len(buckets)), key=lambda i: (buckets[i], lengths[i], tiebreak[i]))
    batches: list[list[int]] = []
    for i in order:
        size = rows_per_batch(buckets[i], batch_size, batch_tokens)
        if batches and len(batches[-1]) < size and buckets[batches[-1][0]] == buckets[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in shuffled]


def batch_padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of the batched tensor that is padding (each batch is padded to its longest row)."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded if padded else 0.0


def steps_per_epoch(buckets: list[int], lengths: list[int], batch_size: int, batch_tokens: int | None,
                    grad_accum: int) -> int:
    n = len(epoch_batches(buckets, lengths, batch_size, batch_tokens, 0, 0))
    return max(1, math.ceil(n / grad_accum))


def micro_batches(buckets: list[int], lengths: list[int], batch_size: int, batch_tokens: int | None,
                  seed: int) -> Iterator[list[int]]:
    """Micro-batches epoch after epoch (each epoch reshuffled)."""
    epoch = 0
    while True:
        yield from epoch_batches(buckets, lengths, batch_size, batch_tokens, seed, epoch)
        epoch += 1


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _rows(dataset, indices: list[int]) -> list[dict[str, Any]]:
    cols = dataset[indices]
    return [{k: cols[k][i] for k in ("input_ids", "segment_lengths", "segment_streams")}
            for i in range(len(indices))]


def train_loop(model, dataset, s: LoopSettings, accelerator, on_step: Callable[[dict[str, Any]], None],
               heldout=None) -> dict[str, Any]:
    """Run `s.total_steps` optimizer steps; `on_step` receives each step's metrics (with held-out
    losses per stream every `s.eval_every` steps and at the end, when `heldout` rows exist)."""
    from domaintune.train.heldout import heldout_losses

    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    scheduler = get_scheduler(s.scheduler, optimizer, num_warmup_steps=int(s.warmup_ratio * s.total_steps),
                              num_training_steps=s.total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    batches = micro_batches(list(dataset["bucket"]), list(dataset["length"]), s.batch_size,
                            s.batch_tokens, s.seed)
    n_streams = len(s.stream_names)
    totals = {"tokens": 0, "time": 0.0, "padded": 0}
    for step in range(1, s.total_steps + 1):
        t0 = time.perf_counter()
        micro = [collate_packed(_rows(dataset, next(batches)), s.pad_id) for _ in range(s.grad_accum)]
        # Normalize by the whole step's target count so accumulation equals one big batch.
        n_targets = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
        sums = torch.zeros(n_streams, dtype=torch.float64)
        counts = torch.zeros(n_streams, dtype=torch.float64)
        for b in micro:
            b = {k: v.to(accelerator.device) for k, v in b.items()}
            with accelerator.autocast():
                logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            losses = token_losses(logits, b["labels"])
            accelerator.backward(losses.sum() / n_targets)
            ss, cc = stream_sums(losses.detach().cpu(), b["labels"].cpu(), b["streams"].cpu(), n_streams)
            sums += ss
            counts += cc
        grad_norm = accelerator.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        real_tokens = sum(int((b["streams"] >= 0).sum()) for b in micro)
        totals["tokens"] += real_tokens
        totals["padded"] += sum(b["input_ids"].numel() for b in micro)
        totals["time"] += dt
        rec = _step_metrics(step, sums, counts, s, float(grad_norm), scheduler.get_last_lr()[0],
                            dt, real_tokens, accelerator.device)
        if heldout is not None and len(heldout) and (step == s.total_steps or
                                                     (s.eval_every and step % s.eval_every == 0)):
            plan = epoch_batches(list(heldout["bucket"]), list(heldout["length"]), s.batch_size,
                                 s.batch_tokens, s.seed, 0)
            rec |= heldout_losses(model, heldout, plan, s.stream_names, s.pad_id, accelerator.device)
        on_step(rec)
    return {"tokens": totals["tokens"], "train_time_s": totals["time"],
            "tokens_per_s": totals["tokens"] / max(totals["time"], 1e-9),
            "batch_padding_fraction": 1 - totals["tokens"] / max(totals["padded"], 1),
            "peak_memory_mb": peak_memory_mb(accelerator.device)}


def _step_metrics(step, sums, counts, s: LoopSettings, grad_norm, lr, dt, real_tokens, device):
    rec = {"step": step, "train/loss": float(sums.sum() / counts.sum().clamp(min=1)),
           "grad_norm": grad_norm, "lr": lr, "step_time_s": dt, "tokens_per_s": real_tokens / dt,
           "tokens": real_tokens, "targets": int(counts.sum()), "peak_memory_mb": peak_memory_mb(device)}
    for i, name in enumerate(s.stream_names):
        if counts[i] > 0:
            rec[f"train/loss/{name}"] = float(sums[i] / counts[i])
            rec[f"train/targets/{name}"] = int(counts[i])
    return rec
