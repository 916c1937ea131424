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
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from domaintune.errors import Preempted
from domaintune.training.checkpoint import load_checkpoint, newest_intact, save_checkpoint
from domaintune.training.collate import collate_packed, packed_rows, row_targets, stream_sums, token_losses
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.packed_attention import packed_attention
from domaintune.training.throughput import device_peak_flops, mfu


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
    n_params: int = 0  # for the MFU estimate
    packed_attention: str = "segments"  # training/packed_attention.py: per-document sdpa, or the 4D mask


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


def _targets(dataset, indices: list[int]) -> int:
    """Predicted tokens in these rows: a segment of length L has L-1 targets (fewer under a loss mask)."""
    return sum(row_targets(row) for row in packed_rows(dataset, indices))


def _train_step(model, dataset, plan: list[list[int]], s: LoopSettings, accelerator) -> dict[str, Any]:
    """Forward/backward over this rank's share of one optimizer step's micro-batches.

    `plan` holds the micro-batches of ALL ranks; rank r takes every W-th one, so ranks read
    disjoint, deterministic shards. The loss is normalized by the target count of the whole
    plan (times W, since DDP averages gradients over ranks), so any (W, grad_accum) split gives
    the gradient of one big batch.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    n_targets = sum(_targets(dataset, indices) for indices in plan)
    n_streams = len(s.stream_names)
    sums, counts = torch.zeros(n_streams, dtype=torch.float64), torch.zeros(n_streams, dtype=torch.float64)
    mine = plan[rank::world]
    tokens = padded = 0
    for i, indices in enumerate(mine):
        b = {k: v.to(accelerator.device) for k, v in collate_packed(packed_rows(dataset, indices), s.pad_id).items()}
        sync = accelerator.no_sync(model) if i < len(mine) - 1 else nullcontext()
        with sync, accelerator.autocast():
            logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            losses = token_losses(logits, b["labels"])
            accelerator.backward(losses.sum() * world / n_targets)
        ss, cc = stream_sums(losses.detach().cpu(), b["labels"].cpu(), b["streams"].cpu(), n_streams)
        sums, counts = sums + ss, counts + cc
        tokens += int((b["streams"] >= 0).sum())
        padded += b["input_ids"].numel()
    totals = torch.tensor([tokens, padded], dtype=torch.float64)
    if world > 1:  # metrics of the whole step, not just this rank's share
        sums, counts, totals = (accelerator.reduce(t.to(accelerator.device), "sum").cpu()
                                for t in (sums, counts, totals))
    return {"sums": sums, "counts": counts, "tokens": int(totals[0]), "padded": int(totals[1])}


@dataclass(frozen=True)
class Checkpointing:
    root: Path
    save_every: int | None
    keep_last: int
    meta: dict[str, Any]  # stored in every checkpoint (resume key, config)
    resume_from: Path | None = None


def _restore(ckpt: Checkpointing | None, model, optimizer, scheduler, accelerator) -> tuple[int, int]:
    """Load the resume checkpoint (if any); returns (the step it ended, micro-batches it skipped)."""
    if ckpt is None or ckpt.resume_from is None:
        return 0, 0
    meta = load_checkpoint(ckpt.resume_from, accelerator.unwrap_model(model), optimizer, scheduler)
    return int(meta["step"]), int(meta.get("batches_skipped", 0))


def _rollback(ckpt: Checkpointing | None, step: int, model, optimizer, scheduler, accelerator) -> int | None:
    """Restore the newest intact checkpoint before `step` (None if there is none); returns its step."""
    if ckpt is None:
        return None
    path = newest_intact(ckpt.root, before_step=step)
    if path is None:
        return None
    optimizer.zero_grad(set_to_none=True)
    return int(load_checkpoint(path, accelerator.unwrap_model(model), optimizer, scheduler)["step"])


def _maybe_save(ckpt: Checkpointing | None, step: int, model, optimizer, scheduler, accelerator,
                force: bool = False, val_loss: float | None = None, batches_skipped: int = 0) -> None:
    if ckpt is None or (not force and (not ckpt.save_every or step % ckpt.save_every)):
        return
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(ckpt.root, step, accelerator.unwrap_model(model), optimizer, scheduler,
                        {**ckpt.meta, "val_loss": val_loss, "batches_skipped": batches_skipped}, ckpt.keep_last)
    accelerator.wait_for_everyone()


def _preemption_requested(preempt: PreemptionFlag | None, accelerator) -> bool:
    """Any rank signalled -> all ranks stop at this step boundary (else they would deadlock)."""
    flag = torch.tensor([int(bool(preempt and preempt.requested))], dtype=torch.float64)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag.to(accelerator.device), "sum").cpu()
    return bool(flag.item())


def _build_optim(model, s: LoopSettings, accelerator):
    """AdamW over the trainable parameters and the LR schedule; returns (model, optimizer, scheduler, params)."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    scheduler = get_scheduler(s.scheduler, optimizer, num_warmup_steps=int(s.warmup_ratio * s.total_steps),
                              num_training_steps=s.total_steps)
    # The scheduler stays outside accelerate: its wrapper steps once per process per call (it assumes
    # each rank sees a slice of an epoch), which would run the schedule W times too fast here.
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler, params


@dataclass(frozen=True)
class Decision:
    update: bool  # apply this step's gradients
    spike: bool
    roll_back: bool  # restore the last checkpoint (if there is one) and skip the batches since it


def _guard_decision(guard: StepGuard | None, step: int, loss: float, grad_norm: float, rows: list[int],
                    scaled: bool) -> Decision:
    """What the guards make of this step. `scaled` (fp16): overflowing gradients are the grad scaler's call."""
    if guard is None:
        return Decision(True, False, False)
    update = guard.finite(step, loss, grad_norm, rows, judge_grads=not scaled)
    spike = update and guard.spike(loss)
    if spike and guard.rollback:  # PaLM-style; without a checkpoint (or rollbacks used up) at least
        return Decision(False, True, guard.may_roll_back())  # keep this batch out of the weights
    return Decision(update, spike, False)


def _optimizer_step(optimizer, scheduler, update: bool, accelerator) -> bool:
    """Apply the step, or not; True when the weights were left unchanged.

    A step the guard rejects still goes through `optimizer.step()`, with its gradients dropped (AdamW
    leaves parameters without gradients untouched): under fp16 the grad scaler updates itself only
    there, and skipping it makes the next step's unscale_ raise. The scaler's own overflow skips are
    read from accelerate (`optimizer_step_was_skipped`), not second-guessed."""
    if not update:
        optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    skipped = not update or accelerator.optimizer_step_was_skipped
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return skipped


def train_loop(model, dataset, s: LoopSettings, accelerator, on_step: Callable[[dict[str, Any]], None],
               heldout=None, ckpt: Checkpointing | None = None, guard: StepGuard | None = None,
               preempt: PreemptionFlag | None = None, auto_eval=None) -> dict[str, Any]:
    """Run optimizer steps up to `s.total_steps`; `on_step` receives each step's metrics (with
    held-out losses per stream every `s.eval_every` steps and at the end, when `heldout` rows
    exist). With `ckpt.resume_from`, training continues exactly where that checkpoint ended:
    the batch plan is a pure function of (rows, seed, step), so skipping the consumed
    micro-batches reproduces the uninterrupted sequence."""
    with packed_attention(model, s.packed_attention):
        return _train_loop(model, dataset, s, accelerator, on_step, heldout, ckpt, guard, preempt, auto_eval)


def _train_loop(model, dataset, s: LoopSettings, accelerator, on_step, heldout, ckpt, guard, preempt, auto_eval):
    model, optimizer, scheduler, params = _build_optim(model, s, accelerator)
    model.train()
    batches = micro_batches(list(dataset["bucket"]), list(dataset["length"]), s.batch_size,
                            s.batch_tokens, s.seed)
    per_step = s.grad_accum * accelerator.num_processes
    start, batches_skipped = _restore(ckpt, model, optimizer, scheduler, accelerator)
    for _ in range(start * per_step + batches_skipped):
        next(batches)  # consumed (or skipped by a rollback) before the checkpoint
    totals = {"tokens": 0, "time": 0.0, "padded": 0, "scaler_skipped": 0}
    peak = device_peak_flops(accelerator.device)
    step = start
    while step < s.total_steps:
        step += 1
        t0 = time.perf_counter()
        plan = [next(batches) for _ in range(per_step)]
        out = _train_step(model, dataset, plan, s, accelerator)
        grad_norm = float(accelerator.clip_grad_norm_(params, s.max_grad_norm))
        loss = float(out["sums"].sum() / out["counts"].sum().clamp(min=1))
        rows = [i for indices in plan for i in indices]
        d = _guard_decision(guard, step, loss, grad_norm, rows, scaled=accelerator.scaler is not None)
        skipped = _optimizer_step(optimizer, scheduler, d.update, accelerator)
        restored = _rollback(ckpt, step, model, optimizer, scheduler, accelerator) if d.roll_back else None
        if restored is not None:
            # the iterator already sits past the batches since the checkpoint, this one included:
            # they are skipped, and `batches_skipped` keeps resume exact
            batches_skipped += (step - restored) * per_step
            guard.rolled_back(step, restored)
            on_step({"step": step, "train/loss": loss, "spike": True, "rolled_back_to": restored, "rows": rows})
            step = restored
            continue
        totals["scaler_skipped"] += int(skipped and d.update)
        dt = time.perf_counter() - t0
        for key in ("tokens", "padded"):
            totals[key] += out[key]
        totals["time"] += dt
        rec = _step_record(step, out, s, grad_norm, scheduler.get_last_lr()[0], dt, rows, d.spike, skipped,
                           accelerator, peak)
        if _eval_due(step, s, heldout):
            rec |= _heldout(accelerator.unwrap_model(model), heldout, s, accelerator.device)
        if auto_eval is not None:  # benchmarks every N steps; may ask to stop (training/autoeval.py)
            rec |= auto_eval(accelerator.unwrap_model(model), rec)
        on_step(rec)
        stop = _preemption_requested(preempt, accelerator)
        _maybe_save(ckpt, step, model, optimizer, scheduler, accelerator, force=stop, val_loss=rec.get("val/loss"),
                    batches_skipped=batches_skipped)
        if stop:
            raise Preempted(f"stopped by signal after step {step}; checkpoint saved in {ckpt.root if ckpt else '-'}. "
                            f"Re-run the same command to resume.")
        if auto_eval is not None and auto_eval.stop_reason:
            break
    return _summary(totals, guard, start, batches_skipped, accelerator, s.n_params, peak)


def _step_record(step: int, out: dict[str, Any], s: LoopSettings, grad_norm: float, lr: float, dt: float,
                 rows: list[int], spike: bool, skipped: bool, accelerator, peak: float | None) -> dict[str, Any]:
    rec = _step_metrics(step, out["sums"], out["counts"], s, grad_norm, lr, dt, out["tokens"], accelerator.device)
    rec["rows"] = rows  # which packed rows this step consumed
    if spike:
        rec["spike"] = True
    if skipped:
        rec["skipped"] = True
    step_mfu = mfu(s.n_params, out["tokens"] / dt / accelerator.num_processes, peak)
    if step_mfu is not None:
        rec["mfu"] = step_mfu
    return rec


def _summary(totals: dict[str, Any], guard: StepGuard | None, start: int, batches_skipped: int, accelerator,
             n_params: int, peak: float | None) -> dict[str, Any]:
    tokens_per_s = totals["tokens"] / max(totals["time"], 1e-9)
    per_device = tokens_per_s / accelerator.num_processes
    out = {"resumed_from_step": start, "skipped_steps": guard.skipped if guard else 0,
           "scaler_skipped_steps": totals["scaler_skipped"],
           "loss_spikes": guard.spikes if guard else 0, "rollbacks": guard.rollbacks if guard else 0,
           "batches_skipped_by_rollback": batches_skipped, "tokens": totals["tokens"], "train_time_s": totals["time"],
           "tokens_per_s": tokens_per_s, "tokens_per_s_per_device": per_device,
           "batch_padding_fraction": 1 - totals["tokens"] / max(totals["padded"], 1),
           "peak_memory_mb": peak_memory_mb(accelerator.device)}
    if peak:
        out["mfu"] = mfu(n_params, per_device, peak)
    return out


def _eval_due(step: int, s: LoopSettings, heldout) -> bool:
    if heldout is None or not len(heldout):
        return False
    return step == s.total_steps or bool(s.eval_every and step % s.eval_every == 0)


def _heldout(model, heldout, s: LoopSettings, device) -> dict[str, float]:
    """Every rank scores all held-out rows with the unwrapped model (no collectives involved)."""
    from domaintune.training.heldout import heldout_losses

    plan = epoch_batches(list(heldout["bucket"]), list(heldout["length"]), s.batch_size, s.batch_tokens, s.seed, 0)
    return heldout_losses(model, heldout, plan, s.stream_names, s.pad_id, device)


def _step_metrics(step, sums, counts, s: LoopSettings, grad_norm, lr, dt, real_tokens, device):
    rec = {"step": step, "train/loss": float(sums.sum() / counts.sum().clamp(min=1)),
           "grad_norm": grad_norm, "lr": lr, "step_time_s": dt, "tokens_per_s": real_tokens / dt,
           "tokens": real_tokens, "targets": int(counts.sum()), "peak_memory_mb": peak_memory_mb(device)}
    for i, name in enumerate(s.stream_names):
        if counts[i] > 0:
            rec[f"train/loss/{name}"] = float(sums[i] / counts[i])
            rec[f"train/targets/{name}"] = int(counts[i])
    return rec
