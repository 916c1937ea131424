"""Stage "train": continual pre-training on the packed mixture (LoRA, QLoRA or full)."""

from __future__ import annotations

import json

import torch

from domaintune import models
from domaintune.artifacts import RunDir, StageResult
from domaintune.config import Config
from domaintune.console import console
from domaintune.supervise import note_elastic_restart, restarts_of_this_run
from domaintune.training.autoeval import AutoEval
from domaintune.training.checkpoint import read_meta
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.loop import Checkpointing, LoopSettings, steps_per_epoch, train_loop
from domaintune.training.metrics_log import plot_loss_curves
from domaintune.training.reporting import StepReporter
from domaintune.training.resume import choose_checkpoint, mark_finished, mix_fingerprint, resume_config

STAGE = "train"
PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)


def _settings(cfg: Config, dataset, stream_names: list[str], pad_id: int, n_params: int) -> LoopSettings:
    b, o, g = cfg.train.batch, cfg.train.optim, cfg.train.logging
    total = b.max_steps or b.epochs * steps_per_epoch(list(dataset["bucket"]), list(dataset["length"]),
                                                      b.batch_size, b.batch_tokens, b.grad_accum)
    return LoopSettings(batch_size=b.batch_size, batch_tokens=b.batch_tokens, grad_accum=b.grad_accum,
                        total_steps=total, lr=o.lr,
                        weight_decay=o.weight_decay, warmup_ratio=o.warmup_ratio, scheduler=o.scheduler,
                        max_grad_norm=o.max_grad_norm, log_every=g.log_every, eval_every=g.eval_every,
                        seed=cfg.seed,
                        stream_names=tuple(stream_names), pad_id=pad_id, n_params=n_params)


def _build_model(cfg: Config, device: str):
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_model(cfg.model, device=device, quantize_4bit=cfg.train.method == "qlora")
    torch.manual_seed(cfg.seed)  # adapter initialisation is random
    model = models.prepare_for_training(model, cfg.train.method, cfg.train.adapter,
                                        train_embeddings=cfg.train.train_embeddings,
                                        activation_checkpointing=cfg.train.activation_checkpointing)
    trainable, total = models.trainable_parameters(model)
    console.print(f"  {cfg.train.method}: training {trainable:,} of {total:,} parameters "
                  f"({trainable / total:.2%}) on {device}")
    return model, tokenizer, trainable


def _checkpointing(cfg: Config, run_dir: RunDir, out_dir) -> Checkpointing:
    current = resume_config(cfg, mix_fingerprint(run_dir))
    root = out_dir / "checkpoints"
    resume_from = choose_checkpoint(cfg, root, current, lambda m: console.print(f"  [yellow]warning:[/] {m}"))
    c = cfg.train.checkpoint
    return Checkpointing(root, c.save_every, c.keep_last, {"resume_config": current}, resume_from)


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    from accelerate import Accelerator
    from datasets import load_from_disk

    out_dir = run_dir.stage_dir(STAGE)
    info = json.loads(run_dir.output("mix", "info", by=STAGE).read_text(encoding="utf-8"))
    dataset = load_from_disk(str(run_dir.output("mix", "packed", by=STAGE)))
    has_heldout = "heldout" in run_dir.require("mix", by=STAGE)["outputs"]
    heldout = load_from_disk(str(run_dir.output("mix", "heldout", by=STAGE))) if has_heldout else None
    device = models.resolve_device(cfg.runtime.device)
    accelerator = Accelerator(mixed_precision=PRECISION[cfg.train.precision], cpu=device == "cpu")
    model, tokenizer, trainable = _build_model(cfg, device)
    s = _settings(cfg, dataset, info["streams"], tokenizer.pad_token_id, models.trainable_parameters(model)[1])
    ckpt = _checkpointing(cfg, run_dir, out_dir)
    start = int(read_meta(ckpt.resume_from)["step"]) if ckpt.resume_from else 0
    if start:
        console.print(f"  resuming from {ckpt.resume_from.name} (step {start} of {s.total_steps})")
    if accelerator.is_main_process and (elastic := note_elastic_restart(out_dir, start)):
        console.print(f"  torchrun restart {elastic['attempt']}: resumed at step {start}, "
                      f"{elastic['time_lost_s']}s after the last finished step")
    reporter = StepReporter(out_dir, cfg.train.logging.report_to, cfg.name, cfg.model_dump(mode="json"),
                            s.total_steps, s.log_every, s.stream_names, main=accelerator.is_main_process,
                            resume_step=start, section="train")
    t = cfg.train.guards
    guard = StepGuard(t.nan_policy, t.max_bad_steps, t.spike_factor, out_dir / "diagnostics",
                      rollback=t.spike_policy == "rollback", max_rollbacks=t.max_rollbacks, section="train")
    auto_eval = AutoEval(cfg.train.auto_eval, tokenizer, s.total_steps) if cfg.train.auto_eval else None
    preempt = PreemptionFlag().install()
    try:
        with reporter:
            summary = train_loop(model, dataset, s, accelerator, reporter, heldout=heldout, ckpt=ckpt,
                                 guard=guard, preempt=preempt, auto_eval=auto_eval)
    finally:
        preempt.restore()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        models.save_trained(accelerator.unwrap_model(model), tokenizer, out_dir / "model")
        mark_finished(ckpt.root, ckpt.meta["resume_config"])
        plot_loss_curves(reporter.records, out_dir / "loss_curves.png", f"{cfg.name}: training loss per stream")
    accelerator.wait_for_everyone()
    first, last = reporter.records[0], reporter.records[-1]
    metrics = {"steps": last["step"], "trainable_params": trainable, "first_loss": first["train/loss"],
               "final_loss": last["train/loss"], **{k: round(v, 3) for k, v in summary.items()}}
    metrics |= {k.replace("train/", "final_"): v for k, v in last.items() if k.startswith("train/loss/")}
    metrics |= {k: v for k, v in last.items() if k.startswith("val/loss")}
    metrics["spike_rollbacks"] = reporter.rollbacks
    metrics["restarts"] = restarts_of_this_run(out_dir)  # [] unless restarted by --supervise
    metrics["stop_reason"] = (auto_eval and auto_eval.stop_reason) or f"completed all {s.total_steps} planned steps"
    return StageResult(
        outputs={"model": "model", "metrics": "metrics.jsonl", "plot": "loss_curves.png"},
        metrics=metrics,
        summary=f"{last['step']} steps, loss {first['train/loss']:.3f} → {last['train/loss']:.3f}, "
                f"{summary['tokens_per_s']:.0f} tok/s, padding {summary['batch_padding_fraction']:.1%}",
    )
