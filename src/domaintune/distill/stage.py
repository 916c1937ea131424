"""Stage "distill": train a smaller student from the run's tuned model on the mixture.

Reads top to bottom: the teacher (the previous model stage's model, merged) and the mix stage's
packed rows → the student (layer-pruned copy or another model) → logit KD from one cached teacher
pass (top-k log-probs; loss kd_weight·KL + (1−kd_weight)·CE), or sequence-level KD (the student
learns the teacher's greedy continuations, re-tokenized: works across tokenizers) → save the
student. Eval and export then use the student, as the last model stage.
"""

from __future__ import annotations

import json
import time

import torch

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, stable_hash
from domaintune.config import Config
from domaintune.console import console
from domaintune.distill import teacher_cache
from domaintune.distill.student import build_student, same_vocabulary
from domaintune.errors import ConfigError
from domaintune.training.collate import collate_packed, packed_rows, token_losses
from domaintune.training.loop import micro_batches

STAGE = "distill"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)


def _teacher(cfg: Config, run_dir: RunDir, device: str):
    source = cfg.previous_model_stage(STAGE)
    trained = models.load_trained(run_dir.output(source, "model", by=STAGE), base=cfg.model, device=device)
    model = trained.model.merge_and_unload() if hasattr(trained.model, "merge_and_unload") else trained.model
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), trained.tokenizer, source


def _plan(cfg: Config, dataset) -> list[list[int]]:
    """The micro-batches of every step, fixed by the seed (same rows for a KD and a CE student)."""
    it = micro_batches(list(dataset["bucket"]), list(dataset["length"]), cfg.distill.batch_rows, None, cfg.seed)
    return [next(it) for _ in range(cfg.distill.steps)]


def train_student(student, dataset, plan: list[list[int]], d, pad_id: int, cache: dict | None,
                  log_every: int = 10) -> list[dict]:
    """The loop: AdamW + cosine schedule; KD from `cache` when given, plain cross-entropy otherwise."""
    from transformers import get_scheduler

    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=d.lr, weight_decay=d.weight_decay)
    sched = get_scheduler("cosine", opt, num_warmup_steps=max(1, len(plan) // 20), num_training_steps=len(plan))
    records = []
    for step, rows in enumerate(plan, 1):
        t0 = time.perf_counter()
        b = collate_packed(packed_rows(dataset, rows), pad_id)
        logits = student(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        tl = token_losses(logits, b["labels"])
        mask = b["labels"][:, 1:] != -100
        ce = tl.sum() / mask.sum().clamp(min=1)
        loss, kl = ce, None
        if cache is not None:
            values, ids = teacher_cache.batch_targets(cache, rows, b["input_ids"].shape[1])
            kl = teacher_cache.topk_kl(logits, values, ids, b["labels"], d.temperature)
            loss = d.kd_weight * kl + (1 - d.kd_weight) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss, ce, kl = loss.detach(), ce.detach(), None if kl is None else kl.detach()
        rec = {"step": step, "loss": loss.item(), "ce": ce.item(), "kl": None if kl is None else kl.item(),
               "s": time.perf_counter() - t0}
        records.append(rec)
        if step % log_every == 0 or step == len(plan):
            console.print(f"  step {step}/{len(plan)} loss {rec['loss']:.3f} ce {rec['ce']:.3f}"
                          + (f" kl {rec['kl']:.3f}" if kl is not None else ""))
    return records


def _seq_kd_rows(teacher, t_tok, s_tok, dataset, rows: list[int], d) -> list[dict]:
    """The teacher's greedy continuation of each row's first tokens, re-tokenized for the student."""
    out = []
    with torch.inference_mode():
        for r in dict.fromkeys(rows):
            prompt = torch.tensor([dataset[r]["input_ids"][: d.seq_prompt_tokens]])
            gen = teacher.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=d.seq_new_tokens,
                                   do_sample=False, pad_token_id=t_tok.pad_token_id)
            ids = s_tok(t_tok.decode(gen[0], skip_special_tokens=True), add_special_tokens=False).input_ids
            if len(ids) > 1:
                out.append({"input_ids": ids, "segment_lengths": [len(ids)],
                            "segment_streams": [dataset[r]["segment_streams"][0]]})
    return out


def _as_dataset(rows: list[dict]):
    from datasets import Dataset

    # one bucket: rows of similar length (prompt + continuation) batch together
    return Dataset.from_list([{**r, "bucket": 0, "length": len(r["input_ids"])} for r in rows])


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    from datasets import load_from_disk

    d, out_dir = cfg.distill, run_dir.stage_dir(STAGE)
    device = models.resolve_device(cfg.runtime.device)
    teacher, t_tok, source = _teacher(cfg, run_dir, device)
    dataset = load_from_disk(str(run_dir.output("mix", "packed", by=STAGE)))
    student, s_tok, init = build_student(d.student, teacher, device)
    s_tok = s_tok or t_tok
    for p in student.parameters():
        p.requires_grad_(True)
    if d.method == "logit_kd" and not same_vocabulary(t_tok, s_tok):
        raise ConfigError([f"distill.method: logit_kd needs the teacher's tokenizer, but {d.student.path} has "
                           f"another vocabulary; use distill.method: seq_kd (learns the teacher's text)"])
    plan = _plan(cfg, dataset)
    if d.method == "logit_kd":
        rows = sorted({r for step in plan for r in step})
        key = f"{run_dir.require(source, by=STAGE)['fingerprint']}-{run_dir.require('mix', by=STAGE)['fingerprint']}"
        name = stable_hash({"key": key, "top_k": d.top_k, "t": d.temperature, "rows": rows})[:24]
        cache_file = run_dir.cache_dir("distill-teacher") / f"{name}.safetensors"
        cache = teacher_cache.build(teacher, dataset, rows, d.top_k, d.temperature, t_tok.pad_token_id, cache_file)
        records = train_student(student, dataset, plan, d, t_tok.pad_token_id, cache)
    else:
        seq = _as_dataset(_seq_kd_rows(teacher, t_tok, s_tok, dataset, [r for step in plan for r in step], d))
        records = train_student(student, seq, _plan(cfg, seq), d, s_tok.pad_token_id, None)
    n_t = sum(p.numel() for p in teacher.parameters())
    del teacher
    models.save_trained(student, s_tok, out_dir / "model")
    atomic_write_json(out_dir / "metrics.json", records)
    n_s = sum(p.numel() for p in student.parameters())
    info = {"teacher_stage": source, "method": d.method, "student": init, "teacher_params": n_t,
            "student_params": n_s, "steps": len(records), "first_loss": records[0]["loss"],
            "final_loss": records[-1]["loss"]}
    (out_dir / "distill.json").write_text(json.dumps(info, indent=2) + "\n")
    return StageResult(outputs={"model": "model", "metrics": "metrics.json", "info": "distill.json"},
                       metrics=info,
                       summary=f"{d.method} student {n_s / 1e6:.1f}M params ({n_s / n_t:.0%} of the teacher), "
                               f"{len(records)} steps, loss {records[0]['loss']:.3f} → {records[-1]['loss']:.3f}")
