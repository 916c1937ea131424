"""Stage "sft": supervised fine-tuning on conversations (full, LoRA, QLoRA, prefix, or auto).

Reads top to bottom: the start model (the previous model stage's, merged, or the base;
training/start.py) → the instruction data (Alpaca / ShareGPT / OpenAI messages) rendered with the
chat template, loss masked to assistant tokens, packed exactly → one training attempt per method
(`train_attempt`: the same loop, checkpoints, exact resume, guards, spike rollback, auto-eval and
preemption as continual pre-training; training/runner.py) → the chosen model → manifest. The chat
template is saved with the model, so export and serving format prompts as training did.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, fingerprint_path, stable_hash
from domaintune.config import Config
from domaintune.console import console
from domaintune.errors import CheckpointError, DataError
from domaintune.instruct.templates import apply_template
from domaintune.sft.data import SFTData, load_sft_data, pack_examples, to_dataset
from domaintune.sft.escalation import run_recipe
from domaintune.training import runner
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.heldout import heldout_accuracy
from domaintune.training.loop import LoopSettings, epoch_batches
from domaintune.training.plots import plot_loss_curves
from domaintune.training.resume import mark_finished, read_json
from domaintune.training.start import Start, discard, start_model

STAGE = "sft"
LOSS_PLOT, RESULT = "loss_curves.png", "result.json"


def inputs(cfg: Config) -> list[str]:
    template = cfg.sft.template
    files = [template] if template and Path(template).is_file() else []
    return models.model_inputs(cfg.model) + [d.path for d in cfg.sft.data] + files


def _section(cfg: Config) -> runner.TrainingSection:
    return runner.TrainingSection(STAGE, cfg.sft)


# --------------------------------------------------------------------------- setup
def _prepare_data(cfg: Config, tokenizer, out_dir: Path, main: bool) -> SFTData:
    data = load_sft_data(cfg.sft, tokenizer, cfg.seed)  # deterministic: every rank gets the same rows
    if main:
        with (out_dir / "quarantine.jsonl").open("w", encoding="utf-8") as fh:
            for q in data.quarantined:
                fh.write(json.dumps(q, ensure_ascii=False, default=str) + "\n")
    bad = len(data.quarantined) / max(data.rows_read, 1)
    if data.quarantined:
        first = data.quarantined[0]
        console.print(f"  [yellow]{len(data.quarantined)} of {data.rows_read} rows quarantined[/] "
                      f"(see {out_dir / 'quarantine.jsonl'}); e.g. {first['path']}:{first['line']}: {first['reason']}")
    if bad > cfg.sft.max_invalid_fraction:
        raise DataError(f"{bad:.0%} of the SFT rows were quarantined (> sft.max_invalid_fraction "
                        f"{cfg.sft.max_invalid_fraction:.0%}); first reason: {data.quarantined[0]['reason']}. "
                        f"Fix the data (see {out_dir / 'quarantine.jsonl'}) or raise the limit")
    if not data.train:
        raise DataError("no usable SFT training examples (every row was quarantined or held out)")
    if data.outcomes["answer_cut"]:
        console.print(f"  [yellow]{data.outcomes['answer_cut']} conversations had their final answer cut at "
                      f"sft.max_len={cfg.sft.max_len}[/] (truncation: answer)")
    return data


def _datasets(cfg: Config, data: SFTData):
    packed, max_len = cfg.sft.packed, cfg.sft.max_len
    train_ds = to_dataset(pack_examples(data.train, max_len, packed, cfg.seed), max_len, packed)
    val_ds = to_dataset(pack_examples(data.val, max_len, packed, cfg.seed), max_len, packed)
    console.print(f"  {len(data.train)} train / {len(data.val)} held-out conversations → {len(train_ds)} "
                  f"{'packed ' if packed else ''}rows of ≤{max_len} tokens; template: "
                  f"{cfg.sft.template or 'the tokenizer’s own'}")
    return train_ds, val_ds


@dataclass(frozen=True)
class Setup:
    """What every training attempt of one SFT run shares."""

    cfg: Config
    run_dir: RunDir
    start: Start
    tokenizer: Any
    train_ds: Any
    val_ds: Any
    streams: list[str]
    data_key: str
    device: str


# --------------------------------------------------------------------------- one attempt
def _resume_key(cfg: Config, method: str, data_key: str) -> dict[str, Any]:
    return {"sft": runner.result_settings(cfg, _section(cfg)), "method": method, "model": cfg.section("model"),
            "seed": cfg.seed, "data": data_key}


def recorded_result(root: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The result of an attempt that already finished in `root` with the same settings, else None."""
    done = root / RESULT
    if not (done.is_file() and (root / "model").is_dir()):
        return None
    recorded = read_json(done, f"delete it to train this attempt again (its model in {root / 'model'} "
                               f"is then retrained)")
    if not isinstance(recorded, dict) or "result" not in recorded:
        raise CheckpointError(f"{done} does not hold an attempt's result; delete it to train this attempt again")
    return recorded["result"] if recorded.get("key") == stable_hash(key) else None


def train_attempt(setup: Setup, method: str, root: Path, reuse: bool = False) -> dict[str, Any]:
    """Train one method into `root` (model/, checkpoints/, metrics.jsonl, loss curves) and score it.
    `reuse`: return the recorded result of an attempt that finished with the same settings (an
    interrupted `auto` run does not retrain the attempts it completed)."""
    cfg, section = setup.cfg, _section(setup.cfg)
    root.mkdir(parents=True, exist_ok=True)
    current = _resume_key(cfg, method, setup.data_key)
    if reuse and (recorded := recorded_result(root, current)) is not None:
        console.print(f"  {method}: finished earlier with the same settings; result reused")
        return recorded
    accelerator = runner.make_accelerator(section, setup.device)
    model, trainable = runner.build_trainable(setup.start.model, method, section, cfg.seed, setup.device,
                                              prefix_tokens=cfg.sft.prefix.num_virtual_tokens)
    s = runner.loop_settings(section, cfg.seed, setup.train_ds, setup.streams, setup.tokenizer.pad_token_id,
                             models.trainable_parameters(model)[1])
    ckpt = runner.checkpointing(section, root / "checkpoints", current)
    start = runner.start_step(ckpt, s.total_steps)
    heartbeat = Heartbeat(setup.run_dir.heartbeat_path(STAGE), STAGE, method, main=accelerator.is_main_process)
    out = runner.run_loop(model, setup.train_ds, s, accelerator, section=section, out_dir=root, heartbeat=heartbeat,
                          ckpt=ckpt, report=runner.report_settings(section, cfg.name, cfg.model_dump(mode="json")),
                          heldout=setup.val_ds if len(setup.val_ds) else None, tokenizer=setup.tokenizer,
                          resume_step=start)
    accuracy = _accuracy(setup, out.model, s)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save(setup, out.model, method, root)
        mark_finished(ckpt.root, current)
        plot_loss_curves(out.records, root / LOSS_PLOT, f"{cfg.name}: SFT loss ({method})")
    accelerator.wait_for_everyone()
    first, last = out.records[0], out.records[-1]
    result = {"steps": last["step"], "trainable_params": trainable, "first_loss": first["train/loss"],
              "final_loss": last["train/loss"], "val_loss": last.get("val/loss"), "val_accuracy": accuracy,
              **{k: round(v, 3) for k, v in out.summary.items()},
              **{k: v for k, v in last.items() if k.startswith(("val/loss/", "autoeval/"))},
              "spike_rollbacks": out.rollbacks,
              "stop_reason": out.stop_reason or f"completed all {s.total_steps} planned steps"}
    if accelerator.is_main_process:
        atomic_write_json(root / RESULT, {"key": stable_hash(current), "result": result})
    return result


def _accuracy(setup: Setup, model, s: LoopSettings) -> float | None:
    if not len(setup.val_ds):
        return None
    plan = epoch_batches(list(setup.val_ds["bucket"]), list(setup.val_ds["length"]), s.batch_size,
                         s.batch_tokens, s.seed, 0)
    return heldout_accuracy(model, setup.val_ds, plan, s.pad_id, setup.device)


def _save(setup: Setup, model, method: str, root: Path) -> None:
    """root/model must load with models.load_trained(dir, base=cfg.model): an adapter trained on top of
    a previous stage's merged model is merged into it (the base alone would not match)."""
    target = root / "model"
    shutil.rmtree(target, ignore_errors=True)
    if not setup.start.from_previous_stage or method == "full":
        models.save_trained(model, setup.tokenizer, target)
        return
    adapter = root / "adapter"
    models.save_trained(model, setup.tokenizer, adapter)
    merged = models.load_trained(adapter, base=setup.start.model, device="cpu").model
    models.merge_and_save(merged, setup.tokenizer, target)


# --------------------------------------------------------------------------- stage
def _unavailable(method: str) -> str | None:
    if method == "qlora" and not torch.cuda.is_available():
        return "qlora needs a CUDA GPU (bitsandbytes 4-bit); skipped on this CPU machine"
    return None


def _data_key(cfg: Config, run_dir: RunDir) -> str:
    prev = cfg.previous_model_stage(STAGE)
    upstream = run_dir.require(prev, by=STAGE)["fingerprint"] if prev else None
    return stable_hash({"files": [fingerprint_path(d.path) for d in cfg.sft.data], "start": upstream})


def with_synth_data(cfg: Config, run_dir: RunDir) -> Config:
    """With a synth section, its pairs (the synth stage's `sft` output, read through its manifest)
    join sft.data as one more source named 'synth'."""
    if not cfg.stage_enabled("synth"):
        return cfg
    from domaintune.config import SFTDataConfig

    path = run_dir.output("synth", "sft", by=STAGE)
    data = [*cfg.sft.data, SFTDataConfig(path=str(path), format="openai", name="synth")]
    return cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"data": data})})


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    # setup
    cfg = with_synth_data(cfg, run_dir)
    out_dir = run_dir.stage_dir(STAGE)
    device = models.resolve_device(cfg.runtime.device)
    accelerator = runner.make_accelerator(_section(cfg), device)
    start = start_model(cfg, run_dir, STAGE, main=accelerator.is_main_process, wait=accelerator.wait_for_everyone)
    tokenizer = models.load_tokenizer(start.model)
    apply_template(tokenizer, cfg.sft.template)
    data = _prepare_data(cfg, tokenizer, out_dir, accelerator.is_main_process)
    train_ds, val_ds = _datasets(cfg, data)
    setup = Setup(cfg, run_dir, start, tokenizer, train_ds, val_ds, data.streams, _data_key(cfg, run_dir), device)
    # train
    if cfg.sft.method == "auto":
        chosen, attempts, result = _run_auto(setup, out_dir)
        model_rel = f"attempts/{chosen}/model"
        plots = {f"loss_curves/{a['method']}": f"attempts/{a['method']}/{LOSS_PLOT}"
                 for a in attempts if a["status"] != "skipped"}
    else:
        chosen, attempts = cfg.sft.method, []
        result = train_attempt(setup, chosen, out_dir)
        model_rel, plots = "model", {"loss_curves": LOSS_PLOT}
    # save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if start.from_previous_stage:
            discard(run_dir, STAGE)  # merged into the output already
        atomic_write_json(out_dir / "attempts.json", attempts)
    # manifest
    metrics = {"method": chosen, "attempts": attempts, "examples_train": len(data.train),
               "examples_val": len(data.val), "quarantined": len(data.quarantined),
               "truncation": dict(data.outcomes), "packed": cfg.sft.packed, **result,
               **run_dir.restarts(STAGE).for_manifest()}
    val = f", held-out loss {result['val_loss']:.3f}" if result.get("val_loss") is not None else ""
    acc = f", accuracy {result['val_accuracy']:.1%}" if result.get("val_accuracy") is not None else ""
    return StageResult(
        outputs={"model": model_rel, "quarantine": "quarantine.jsonl", "attempts": "attempts.json", **plots},
        metrics=metrics,
        summary=f"{chosen}: {result['steps']} steps, loss {result['first_loss']:.3f} → {result['final_loss']:.3f}"
                f"{val}{acc}")


def _run_auto(setup: Setup, out_dir: Path) -> tuple[str, list[dict], dict[str, Any]]:
    auto = setup.cfg.sft.auto
    results: dict[str, dict[str, Any]] = {}

    def train_one(method: str) -> dict[str, Any]:
        console.print(f"  [bold]auto:[/] attempt {method} (target {auto.metric} "
                      f"{'≤' if auto.metric == 'val_loss' else '≥'} {auto.target})")
        results[method] = train_attempt(setup, method, out_dir / "attempts" / method, reuse=True)
        return results[method]

    chosen, attempts = run_recipe(auto.methods, train_one, auto.metric, auto.target, _unavailable)
    for a in attempts:
        console.print(f"  auto: {a['method']}: {a['status']}"
                      + (f" ({a['reason']})" if "reason" in a else f" ({auto.metric} {a.get(auto.metric)})"))
    if chosen is None:
        raise DataError(f"sft.method auto: no method could be trained here ({attempts})")
    return chosen, attempts, results[chosen]
