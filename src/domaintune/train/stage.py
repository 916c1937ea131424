"""Stage "train": continual pre-training on the packed mixture (LoRA, QLoRA or full).

Reads top to bottom: read the mix stage's packed rows → build the trainable model → choose the
checkpoint to resume from → train (training/runner.py: guards, auto-eval, preemption, reporting)
→ save the model and the loss curves → manifest metrics.
"""

from __future__ import annotations

import json

from domaintune import models
from domaintune.artifacts import RunDir, StageResult
from domaintune.config import Config
from domaintune.console import console
from domaintune.training import runner
from domaintune.training.elastic import note_elastic_restart
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.plots import plot_loss_curves
from domaintune.training.resume import mark_finished

STAGE = "train"
LOSS_PLOT = "loss_curves.png"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)


def _section(cfg: Config) -> runner.TrainingSection:
    return runner.TrainingSection(STAGE, cfg.train)


def _read_mix(run_dir: RunDir):
    """The packed training rows, the held-out rows (None if the mix stage kept none) and the mix info."""
    from datasets import load_from_disk

    info = json.loads(run_dir.output("mix", "info", by=STAGE).read_text(encoding="utf-8"))
    dataset = load_from_disk(str(run_dir.output("mix", "packed", by=STAGE)))
    has_heldout = "heldout" in run_dir.require("mix", by=STAGE)["outputs"]
    heldout = load_from_disk(str(run_dir.output("mix", "heldout", by=STAGE))) if has_heldout else None
    return dataset, heldout, info


def _resume_key(cfg: Config, run_dir: RunDir) -> dict:
    """What decides this run's result: a checkpoint saved under other settings is not resumed silently."""
    mix = json.dumps(run_dir.require("mix", by=STAGE)["fingerprint"])
    return {"train": runner.result_settings(cfg, _section(cfg)), "model": cfg.section("model"), "seed": cfg.seed,
            "data": mix}


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    # setup
    section, out_dir = _section(cfg), run_dir.stage_dir(STAGE)
    dataset, heldout, info = _read_mix(run_dir)
    device = models.resolve_device(cfg.runtime.device)
    accelerator = runner.make_accelerator(section, device)
    tokenizer = models.load_tokenizer(cfg.model)
    model, trainable = runner.build_trainable(cfg.model, cfg.train.method, section, cfg.seed, device)
    s = runner.loop_settings(section, cfg.seed, dataset, info["streams"], tokenizer.pad_token_id,
                             models.trainable_parameters(model)[1])
    ckpt = runner.checkpointing(section, out_dir / "checkpoints", _resume_key(cfg, run_dir))
    start = runner.start_step(ckpt, s.total_steps)
    if accelerator.is_main_process and (elastic := note_elastic_restart(run_dir, STAGE, start)):
        console.print(f"  torchrun restart {elastic['attempt']}: resumed at step {start}, "
                      f"{elastic['time_lost_s']}s after the last finished step")
    # train
    heartbeat = Heartbeat(run_dir.heartbeat_path(STAGE), STAGE, main=accelerator.is_main_process)
    out = runner.run_loop(model, dataset, s, accelerator, section=section, out_dir=out_dir, heartbeat=heartbeat,
                          ckpt=ckpt, report=runner.report_settings(section, cfg.name, cfg.model_dump(mode="json")),
                          heldout=heldout, tokenizer=tokenizer, resume_step=start)
    # save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        models.save_trained(out.model, tokenizer, out_dir / "model")
        mark_finished(ckpt.root, ckpt.meta["resume_config"])
        plot_loss_curves(out.records, out_dir / LOSS_PLOT, f"{cfg.name}: training loss per stream")
    accelerator.wait_for_everyone()
    # manifest
    return StageResult(outputs={"model": "model", "metrics": "metrics.jsonl", "loss_curves": LOSS_PLOT},
                       metrics=_metrics(out, trainable, s.total_steps) | run_dir.restarts(STAGE).for_manifest(),
                       summary=f"{out.records[-1]['step']} steps, loss {out.records[0]['train/loss']:.3f} → "
                               f"{out.records[-1]['train/loss']:.3f}, {out.summary['tokens_per_s']:.0f} tok/s, "
                               f"padding {out.summary['batch_padding_fraction']:.1%}")


def _metrics(out: runner.LoopOutcome, trainable: int, total_steps: int) -> dict:
    first, last = out.records[0], out.records[-1]
    metrics = {"steps": last["step"], "trainable_params": trainable, "first_loss": first["train/loss"],
               "final_loss": last["train/loss"], **{k: round(v, 3) for k, v in out.summary.items()}}
    metrics |= {k.replace("train/", "final_"): v for k, v in last.items() if k.startswith("train/loss/")}
    metrics |= {k: v for k, v in last.items() if k.startswith("val/loss")}
    metrics["spike_rollbacks"] = out.rollbacks
    metrics["stop_reason"] = out.stop_reason or f"completed all {total_steps} planned steps"
    return metrics
