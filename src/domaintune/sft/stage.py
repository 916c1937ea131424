"""Stage "sft": supervised fine-tuning on conversations (full, LoRA, QLoRA, prefix, or auto).

Reads instruction data (Alpaca / ShareGPT / OpenAI messages), renders it with the chat
template, masks the loss to assistant tokens, packs exactly, and trains with the same loop as
continual pre-training (checkpoints, exact resume, guards, preemption). Starts from the
previous model stage's model (its adapter merged first) or the base model. The chat template
is saved with the model, so export and serving format prompts as training did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, fingerprint_path, stable_hash
from domaintune.config import Config, ModelConfig
from domaintune.console import console
from domaintune.errors import DataError
from domaintune.instruct.templates import apply_template
from domaintune.sft.data import SFTData, load_sft_data, pack_examples, to_dataset
from domaintune.sft.escalation import run_recipe
from domaintune.supervise import restarts_of_this_run
from domaintune.training.checkpoint import read_meta
from domaintune.training.guards import PreemptionFlag, StepGuard
from domaintune.training.heldout import heldout_accuracy
from domaintune.training.loop import Checkpointing, LoopSettings, epoch_batches, steps_per_epoch, train_loop
from domaintune.training.metrics_log import plot_loss_curves
from domaintune.training.reporting import StepReporter
from domaintune.training.resume import choose_checkpoint, mark_finished

STAGE = "sft"
PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def inputs(cfg: Config) -> list[str]:
    template = cfg.sft.template
    files = [template] if template and Path(template).is_file() else []
    return models.model_inputs(cfg.model) + [d.path for d in cfg.sft.data] + files


# --------------------------------------------------------------------------- setup
def start_model(cfg: Config, run_dir: RunDir, out_dir: Path, accelerator) -> ModelConfig:
    """The model SFT starts from, as a ModelConfig: the base, or the previous model stage's model
    with its adapter merged (so any SFT method can start from it) in `start_model/`."""
    prev = cfg.previous_model_stage(STAGE)
    if prev is None:
        return cfg.model
    from transformers import AutoTokenizer

    trained = run_dir.output(prev, "model", by=STAGE)
    start_dir = out_dir / "start_model"
    if accelerator.is_main_process:  # one writer; the other ranks wait, then read it
        console.print(f"  starting from the '{prev}' stage's model ({trained})")
        model = models.load_trained(cfg.model, trained, device="cpu")
        models.merge_and_save(model, AutoTokenizer.from_pretrained(trained), start_dir)
    accelerator.wait_for_everyone()
    return cfg.model.model_copy(update={"base": str(start_dir), "gguf_file": None, "revision": None,
                                        "new_tokens": []})


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


def _settings(cfg: Config, dataset, streams: list[str], pad_id: int, n_params: int) -> LoopSettings:
    b, o, g = cfg.sft.batch, cfg.sft.optim, cfg.sft.logging
    total = b.max_steps or b.epochs * steps_per_epoch(list(dataset["bucket"]), list(dataset["length"]),
                                                      b.batch_size, b.batch_tokens, b.grad_accum)
    return LoopSettings(batch_size=b.batch_size, batch_tokens=b.batch_tokens, grad_accum=b.grad_accum,
                        total_steps=total, lr=o.lr, weight_decay=o.weight_decay, warmup_ratio=o.warmup_ratio,
                        scheduler=o.scheduler, max_grad_norm=o.max_grad_norm, log_every=g.log_every,
                        eval_every=g.eval_every, seed=cfg.seed, stream_names=tuple(streams), pad_id=pad_id,
                        n_params=n_params)


def _build_model(cfg: Config, start: ModelConfig, method: str, device: str):
    model = models.load_model(start, device=device, quantize_4bit=method == "qlora", method_key="sft.method")
    torch.manual_seed(cfg.seed)  # adapter / prefix initialisation is random
    if method == "prefix":
        model = models.prepare_prefix_tuning(model, cfg.sft.prefix.num_virtual_tokens)
    else:
        model = models.prepare_for_training(model, method, cfg.sft.adapter, train_embeddings=cfg.sft.train_embeddings,
                                            activation_checkpointing=cfg.sft.activation_checkpointing)
    trainable, total = models.trainable_parameters(model)
    console.print(f"  {method}: training {trainable:,} of {total:,} parameters ({trainable / total:.2%}) on {device}")
    return model, trainable


# --------------------------------------------------------------------------- one attempt
def _resume_key(cfg: Config, method: str, data_key: str) -> dict[str, Any]:
    return {"sft": cfg.result_section("sft"), "method": method, "model": cfg.section("model"), "seed": cfg.seed,
            "data": data_key}


class Attempt:
    """Train one method into `root` (model/, checkpoints/, metrics.jsonl) and score it."""

    def __init__(self, cfg: Config, start: ModelConfig, tokenizer, train_ds, val_ds, streams: list[str],
                 data_key: str, device: str, has_previous_stage: bool):
        self.cfg, self.start, self.tokenizer = cfg, start, tokenizer
        self.train_ds, self.val_ds, self.streams = train_ds, val_ds, streams
        self.data_key, self.device, self.has_previous_stage = data_key, device, has_previous_stage

    def __call__(self, method: str, root: Path, reuse: bool = False) -> dict[str, Any]:
        """`reuse`: return the recorded result of this attempt if it already finished with the same
        settings (an interrupted `auto` run does not retrain the attempts it completed)."""
        from accelerate import Accelerator

        root.mkdir(parents=True, exist_ok=True)
        current = _resume_key(self.cfg, method, self.data_key)
        recorded = self._recorded(root, current) if reuse else None
        if recorded is not None:
            console.print(f"  {method}: finished earlier with the same settings; result reused")
            return recorded
        accelerator = Accelerator(mixed_precision=PRECISION[self.cfg.sft.precision], cpu=self.device == "cpu")
        model, trainable = _build_model(self.cfg, self.start, method, self.device)
        s = _settings(self.cfg, self.train_ds, self.streams, self.tokenizer.pad_token_id,
                      models.trainable_parameters(model)[1])
        model, records, summary = self._train(model, s, accelerator, root, current)
        accuracy = self._accuracy(model, s)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._save(model, method, root)
            mark_finished(root / "checkpoints", current)
            plot_loss_curves(records, root / "loss_curves.png", f"{self.cfg.name}: SFT loss ({method})")
        accelerator.wait_for_everyone()
        first, last = records[0], records[-1]
        result = {"steps": s.total_steps, "trainable_params": trainable, "first_loss": first["train/loss"],
                  "final_loss": last["train/loss"], "val_loss": last.get("val/loss"), "val_accuracy": accuracy,
                  **{k: round(v, 3) for k, v in summary.items()},
                  **{k: v for k, v in last.items() if k.startswith("val/loss/")}}
        if accelerator.is_main_process:
            atomic_write_json(root / "result.json", {"key": stable_hash(current), "result": result})
        return result

    @staticmethod
    def _recorded(root: Path, current: dict[str, Any]) -> dict[str, Any] | None:
        done = root / "result.json"
        if not (done.is_file() and (root / "model").is_dir()):
            return None
        recorded = json.loads(done.read_text(encoding="utf-8"))
        return recorded["result"] if recorded.get("key") == stable_hash(current) else None

    def _train(self, model, s: LoopSettings, accelerator, root: Path, current: dict[str, Any]):
        """The shared training loop with checkpoints/resume, guards, preemption and reporting."""
        sft = self.cfg.sft
        warn = lambda m: console.print(f"  [yellow]warning:[/] {m}")  # noqa: E731
        resume_from = choose_checkpoint(self.cfg, root / "checkpoints", current, warn, section="sft")
        ckpt = Checkpointing(root / "checkpoints", sft.checkpoint.save_every, sft.checkpoint.keep_last,
                             {"resume_config": current},
                             resume_from)
        start_step = int(read_meta(resume_from)["step"]) if resume_from else 0
        if start_step:
            console.print(f"  resuming from {resume_from.name} (step {start_step} of {s.total_steps})")
        reporter = StepReporter(root, sft.logging.report_to, self.cfg.name, self.cfg.model_dump(mode="json"),
                                s.total_steps, s.log_every, s.stream_names, main=accelerator.is_main_process,
                                resume_step=start_step, section="sft")
        guard = StepGuard(sft.guards.nan_policy, sft.guards.max_bad_steps, sft.guards.spike_factor,
                          root / "diagnostics", section="sft")
        preempt = PreemptionFlag().install()
        try:
            with reporter:
                summary = train_loop(model, self.train_ds, s, accelerator, reporter,
                                     heldout=self.val_ds if len(self.val_ds) else None, ckpt=ckpt,
                                     guard=guard, preempt=preempt)
        finally:
            preempt.restore()
        return accelerator.unwrap_model(model), reporter.records, summary

    def _accuracy(self, model, s: LoopSettings) -> float | None:
        if not len(self.val_ds):
            return None
        plan = epoch_batches(list(self.val_ds["bucket"]), list(self.val_ds["length"]), s.batch_size,
                             s.batch_tokens, s.seed, 0)
        return heldout_accuracy(model, self.val_ds, plan, s.pad_id, self.device)

    def _save(self, model, method: str, root: Path) -> None:
        """root/model must load with models.load_trained(cfg.model, ...): an adapter trained on top of
        a previous stage's merged model is merged into it (the base alone would not match)."""
        target = root / "model"
        shutil.rmtree(target, ignore_errors=True)
        if not self.has_previous_stage or method == "full":
            models.save_trained(model, self.tokenizer, target)
            return
        adapter = root / "adapter"
        models.save_trained(model, self.tokenizer, adapter)
        merged = models.load_trained(self.start, adapter, device="cpu")
        models.merge_and_save(merged, self.tokenizer, target)


# --------------------------------------------------------------------------- stage
def _unavailable(method: str) -> str | None:
    if method == "qlora" and not torch.cuda.is_available():
        return "qlora needs a CUDA GPU (bitsandbytes 4-bit); skipped on this CPU machine"
    return None


def _data_key(cfg: Config, run_dir: RunDir) -> str:
    prev = cfg.previous_model_stage(STAGE)
    upstream = run_dir.require(prev, by=STAGE)["fingerprint"] if prev else None
    return stable_hash({"files": [fingerprint_path(d.path) for d in cfg.sft.data], "start": upstream})


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    from accelerate import Accelerator

    out_dir = run_dir.stage_dir(STAGE)
    device = models.resolve_device(cfg.runtime.device)
    accelerator = Accelerator(mixed_precision=PRECISION[cfg.sft.precision], cpu=device == "cpu")
    start = start_model(cfg, run_dir, out_dir, accelerator)
    tokenizer = models.load_tokenizer(start)
    apply_template(tokenizer, cfg.sft.template)
    data = _prepare_data(cfg, tokenizer, out_dir, accelerator.is_main_process)
    packed = cfg.sft.packed
    train_ds = to_dataset(pack_examples(data.train, cfg.sft.max_len, packed, cfg.seed), cfg.sft.max_len, packed)
    val_ds = to_dataset(pack_examples(data.val, cfg.sft.max_len, packed, cfg.seed), cfg.sft.max_len, packed)
    console.print(f"  {len(data.train)} train / {len(data.val)} held-out conversations → {len(train_ds)} "
                  f"{'packed ' if packed else ''}rows of ≤{cfg.sft.max_len} tokens; template: "
                  f"{cfg.sft.template or 'the tokenizer’s own'}")
    attempt = Attempt(cfg, start, tokenizer, train_ds, val_ds, data.streams, _data_key(cfg, run_dir), device,
                      cfg.previous_model_stage(STAGE) is not None)
    if cfg.sft.method == "auto":
        chosen, attempts, result = _run_auto(cfg, attempt, out_dir)
        model_rel = f"attempts/{chosen}/model"
    else:
        chosen, attempts = cfg.sft.method, []
        result = attempt(chosen, out_dir)
        model_rel = "model"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if start is not cfg.model:
            shutil.rmtree(out_dir / "start_model", ignore_errors=True)  # merged into the output already
        atomic_write_json(out_dir / "attempts.json", attempts)
    metrics = {"method": chosen, "attempts": attempts, "examples_train": len(data.train),
               "examples_val": len(data.val), "quarantined": len(data.quarantined),
               "truncation": dict(data.outcomes), "packed": packed, **result,
               "restarts": restarts_of_this_run(out_dir)}
    val = f", held-out loss {result['val_loss']:.3f}" if result.get("val_loss") is not None else ""
    acc = f", accuracy {result['val_accuracy']:.1%}" if result.get("val_accuracy") is not None else ""
    return StageResult(
        outputs={"model": model_rel, "quarantine": "quarantine.jsonl", "attempts": "attempts.json"},
        metrics=metrics,
        summary=f"{chosen}: {result['steps']} steps, loss {result['first_loss']:.3f} → {result['final_loss']:.3f}"
                f"{val}{acc}")


def _run_auto(cfg: Config, attempt: Attempt, out_dir: Path) -> tuple[str, list[dict], dict[str, Any]]:
    auto = cfg.sft.auto
    results: dict[str, dict[str, Any]] = {}

    def train_one(method: str) -> dict[str, Any]:
        console.print(f"  [bold]auto:[/] attempt {method} (target {auto.metric} "
                      f"{'≤' if auto.metric == 'val_loss' else '≥'} {auto.target})")
        results[method] = attempt(method, out_dir / "attempts" / method, reuse=True)
        return results[method]

    chosen, attempts = run_recipe(auto.methods, train_one, auto.metric, auto.target, _unavailable)
    for a in attempts:
        console.print(f"  auto: {a['method']}: {a['status']}"
                      + (f" ({a['reason']})" if "reason" in a else f" ({auto.metric} {a.get(auto.metric)})"))
    if chosen is None:
        raise DataError(f"sft.method auto: no method could be trained here ({attempts})")
    return chosen, attempts, results[chosen]
