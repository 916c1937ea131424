"""Stage "align": preference alignment — reward model, confidence filter, DPO.

Reads top to bottom: read and validate the pairs (bad rows quarantined), load the model the
stage starts from (the previous model stage's, merged, or the base), train the reward model
(general pairs, then domain pairs), drop domain pairs whose reward-margin interval contains 0,
run DPO on the kept pairs, then write the model, the reports and a reward-margin plot.

Every training phase runs an HF/trl trainer under our guards (training/hf_callbacks.py: NaN
guard, SIGTERM checkpoint + exit 75, the stage's heartbeat; training/resume.py: resume from the
newest intact checkpoint). A phase that finished keeps its trained
weights under `<phase>/done/`, so a re-run after an interruption in DPO does not retrain the
reward model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune import models
from domaintune.align import confidence, dpo, reward
from domaintune.align.confidence import write_filter_report
from domaintune.align.phases import Phase
from domaintune.artifacts import RunDir, StageResult, atomic_write_json, fingerprint_path, stable_hash
from domaintune.config import Config
from domaintune.console import console
from domaintune.errors import DataError
from domaintune.instruct.preference import (
    PreferencePair,
    check_reject_share,
    read_pairs,
    split_pairs,
    to_dataset_rows,
    write_rejects,
)
from domaintune.training.heartbeat import Heartbeat
from domaintune.training.hf_trainer import FaultTolerance
from domaintune.training.plots import plot_alignment, plot_phase_losses
from domaintune.training.start import discard, start_model

STAGE = "align"
LOSS_PLOT, MARGIN_PLOT = "loss_curves.png", "reward_margin.png"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model) + list(cfg.align.data.general) + list(cfg.align.data.domain)


@dataclass
class Pairs:
    general_train: list[PreferencePair]
    general_val: list[PreferencePair]
    domain_train: list[PreferencePair]
    domain_val: list[PreferencePair]
    quarantined: int


def _read(cfg: Config, out_dir: Path) -> Pairs:
    d = cfg.align.data
    general, domain = read_pairs(d.general), read_pairs(d.domain)
    rejects_path = write_rejects(out_dir / "rejects.jsonl", general.rejects + domain.rejects)
    if d.general:
        check_reject_share(general, d.max_reject_fraction, "align.data.general", rejects_path)
    check_reject_share(domain, d.max_reject_fraction, "align.data.domain", rejects_path)
    quarantined = len(general.rejects) + len(domain.rejects)
    if quarantined:
        console.print(f"  [yellow]{quarantined} malformed preference row(s) quarantined[/] → {rejects_path}")
    g_train, g_val = split_pairs(general.pairs, d.val_fraction, cfg.seed)
    d_train, d_val = split_pairs(domain.pairs, d.val_fraction, cfg.seed)
    console.print(f"  pairs: general {len(g_train)} train / {len(g_val)} held out; "
                  f"domain {len(d_train)} train / {len(d_val)} held out")
    return Pairs(g_train, g_val, d_train, d_val, quarantined)


def _fault_tolerance(cfg: Config) -> FaultTolerance:
    """Align's own checkpoint and guard settings (`align.checkpoint`, `align.guards`)."""
    return FaultTolerance.from_section(cfg.align, STAGE)


def _start_model(cfg: Config, run_dir: RunDir, device: str):
    """The policy this stage starts from (the previous model stage's, merged, so that DPO's reference
    can be "adapter disabled"; or the base) and the tokenizer saved with it. Returns (model, tokenizer, start)."""
    start = start_model(cfg, run_dir, STAGE)
    return models.load_model(start.model, device=device), models.load_tokenizer(start.model), start


@dataclass
class _Ctx:
    """What every phase of one align run shares."""

    cfg: Config
    out_dir: Path
    tokenizer: Any
    keys: dict[str, Any]
    ft: FaultTolerance
    heartbeat: Heartbeat
    use_cpu: bool
    phases: list[str] = field(default_factory=list)  # the training phases this run went through, in order

    def rows(self, pairs: list[PreferencePair]) -> list[dict[str, Any]]:
        return to_dataset_rows(pairs, conversational=self.tokenizer.chat_template is not None)


def _keys(cfg: Config, run_dir: RunDir, prev: str | None) -> dict[str, Any]:
    """What each phase's result depends on (a phase is reused only if its key is unchanged)."""
    a = cfg.section("align")
    files = [*cfg.align.data.general, *cfg.align.data.domain]
    base = {"model": cfg.section("model"), "seed": cfg.seed, "method": a["method"], "adapter": a["adapter"],
            "precision": a["precision"], "data": {cfg.relative(p): fingerprint_path(p) for p in files},
            "val_fraction": a["data"]["val_fraction"],
            "upstream": run_dir.require(prev, by=STAGE)["fingerprint"] if prev else None}
    rm = {**base, "reward": a["reward"], "filter": a["filter"]}
    return {"reward": rm, "dpo": {**rm, "dpo": a["dpo"]}}


# --------------------------------------------------------------------------- reward model + filter
def _train_reward(ctx: _Ctx, name: str, rm, pairs: list[PreferencePair], seed: int, fresh: bool):
    """One reward-model phase (resumable, reused when done). `fresh`: attach a new adapter."""
    a = ctx.cfg.align
    peft_config = reward.reward_peft_config(a.adapter) if fresh and a.method != "full" else None
    settings = reward.RewardSettings(a.reward.epochs, a.reward.max_steps, a.reward.lr, a.reward.batch_size,
                                     a.dpo.max_len, seed, ctx.use_cpu, a.precision, a.activation_checkpointing)
    rows = ctx.rows(pairs)  # the exact pairs are part of the key: stage 2's depend on the filter
    ctx.phases.append(name)
    phase = Phase(ctx.out_dir / name, {**ctx.keys["reward"], "phase": name, "seed": seed,
                                       "pairs": stable_hash(rows)}, ctx.ft, ctx.heartbeat)

    def same_shape():  # how the trainer wraps the model, to reload a finished phase's weights
        from peft import get_peft_model

        return rm if peft_config is None else get_peft_model(rm, peft_config)

    if (reused := phase.finished_model(same_shape)) is not None:
        return reused
    trainer = reward.build_reward_trainer(rm, ctx.tokenizer, rows, settings, phase.root, ctx.ft.checkpoint_args(),
                                          phase.begin(), peft_config=peft_config)
    return phase.train(trainer)


def _reward_and_filter(ctx: _Ctx, policy, pairs: Pairs):
    """Reward model stage 1 (general pairs; K members for an ensemble filter), the confidence
    filter over the domain pairs, then stage 2 on the kept domain pairs."""
    a, seed = ctx.cfg.align, ctx.cfg.seed
    two_stage = a.reward.two_stage and bool(pairs.general_train)
    first = pairs.general_train if two_stage else pairs.general_train + pairs.domain_train
    members = a.filter.samples if a.filter.enabled and a.filter.method == "ensemble" else 1
    ensemble = [_train_reward(ctx, "reward-stage1" if members == 1 else f"reward-stage1-m{i}",
                              reward.reward_model_from(policy, ctx.tokenizer, seed=seed + i),
                              first if members == 1 else _bootstrap(first, seed + i), seed + i, fresh=True)
                for i in range(members)]
    metrics = _rm_accuracy(ctx, ensemble[0], pairs, "stage1")
    kept, report = pairs.domain_train, None
    if a.filter.enabled:
        kept, report = _confidence_filter(ctx, ensemble, pairs.domain_train)
        write_filter_report(ctx.out_dir / "filter.jsonl", pairs.domain_train, report)
        before, after = report.accuracy_before_after()
        metrics |= {"filter/pairs": len(pairs.domain_train), "filter/kept": len(kept),
                    "filter/dropped_uncertain": report.counts[confidence.UNCERTAIN],
                    "filter/dropped_reversed": report.counts[confidence.REVERSED],
                    "filter/rm_agreement_before": before, "filter/rm_agreement_after": after}
    final_rm = ensemble[0]
    if two_stage and kept:
        final_rm = _train_reward(ctx, "reward-stage2", final_rm, kept, seed, fresh=False)
        metrics |= _rm_accuracy(ctx, final_rm, pairs, "stage2")
    final_rm.save_pretrained(ctx.out_dir / "reward_model", safe_serialization=True)
    ctx.tokenizer.save_pretrained(ctx.out_dir / "reward_model")
    return kept, report, metrics


def _bootstrap(pairs: list[PreferencePair], seed: int) -> list[PreferencePair]:
    import random

    rng = random.Random(seed)
    return [pairs[rng.randrange(len(pairs))] for _ in pairs]


def _rm_accuracy(ctx: _Ctx, rm, pairs: Pairs, label: str) -> dict[str, float]:
    out = {}
    for name, val in (("general", pairs.general_val), ("domain", pairs.domain_val)):
        if val:
            margins = reward.pair_margins(rm, ctx.tokenizer, ctx.rows(val), ctx.cfg.align.dpo.max_len)
            out[f"reward_{label}/accuracy_{name}"] = reward.pair_accuracy(margins)
            out[f"reward_{label}/margin_{name}"] = float(margins.mean())
    shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in out.items())
    console.print(f"  reward model ({label}) on held-out pairs: {shown or 'no held-out pairs'}")
    return out


def _confidence_filter(ctx: _Ctx, ensemble, domain_pairs: list[PreferencePair]):
    f, max_len, rows = ctx.cfg.align.filter, ctx.cfg.align.dpo.max_len, ctx.rows(domain_pairs)
    if f.method == "ensemble":
        import torch

        samples = torch.cat([reward.pair_margins(m, ctx.tokenizer, rows, max_len) for m in ensemble], dim=1)
    else:
        samples = reward.pair_margins(ensemble[0], ctx.tokenizer, rows, max_len, passes=f.samples,
                                      dropout=f.dropout, seed=ctx.cfg.seed)
    report = confidence.filter_pairs(samples, f.level, f.drop_reversed, seed=ctx.cfg.seed)
    kept = [domain_pairs[i] for i in report.kept]
    console.print(f"  confidence filter ({f.method}, {f.samples} samples, {f.level:.0%} interval): kept {len(kept)} "
                  f"of {len(domain_pairs)}; dropped {report.counts[confidence.UNCERTAIN]} uncertain, "
                  f"{report.counts[confidence.REVERSED]} reversed")
    return kept, report


# --------------------------------------------------------------------------- DPO
def _dpo(ctx: _Ctx, policy, train_pairs: list[PreferencePair], val_pairs: list[PreferencePair]):
    """DPO on the kept pairs; held-out metrics before and after. Returns (model, before, after, records)."""
    a, d = ctx.cfg.align, ctx.cfg.align.dpo
    s = dpo.DPOSettings(d.beta, d.sft_weight, d.epochs, d.max_steps, d.lr, d.batch_size, d.grad_accum, d.max_len,
                        d.eval_every, ctx.cfg.seed, ctx.use_cpu, a.precision, a.activation_checkpointing)
    peft_config, ref_model = None, None
    if a.method == "full":
        policy = models.prepare_for_training(policy, "full", a.adapter)
        ref_model = copy.deepcopy(policy).eval().requires_grad_(False)  # frozen reference
    else:
        peft_config = models.build_peft_config(a.adapter)  # trl: reference = adapter disabled
    ctx.phases.append("dpo")
    phase = Phase(ctx.out_dir / "dpo", {**ctx.keys["dpo"], "phase": "dpo"}, ctx.ft, ctx.heartbeat, reuse=False)
    trainer = dpo.build_dpo_trainer(policy, ctx.tokenizer, ctx.rows(train_pairs), ctx.rows(val_pairs), s, phase.root,
                                    ctx.ft.checkpoint_args(), phase.begin(), peft_config, ref_model)
    before = dpo.heldout_metrics(trainer) if phase.resume_from is None else {}
    model = phase.train(trainer)
    return model, before, dpo.heldout_metrics(trainer), phase.records


def _save_model(model, tokenizer, out_dir: Path, from_stage: str | None) -> None:
    """From the base: the adapter alone (eval/export load base + adapter). From a previous stage:
    merged full weights, since `models.load_trained` would put an adapter on the *base* model."""
    if from_stage is not None or not hasattr(model, "merge_and_unload"):
        models.merge_and_save(model, tokenizer, out_dir / "model")
    else:
        models.save_trained(model, tokenizer, out_dir / "model")


def with_synth_pairs(cfg: Config, run_dir: RunDir) -> Config:
    """With synth preference pairs (synth.judge.preference_pairs), the synth stage's `dpo` output,
    read through its manifest, joins align.data.domain."""
    if not cfg.stage_enabled("synth") or "dpo" not in run_dir.require("synth", by=STAGE).get("outputs", {}):
        return cfg
    path = run_dir.output("synth", "dpo", by=STAGE)
    data = cfg.align.data.model_copy(update={"domain": [*cfg.align.data.domain, str(path)]})
    return cfg.model_copy(update={"align": cfg.align.model_copy(update={"data": data})})


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    # setup
    cfg = with_synth_pairs(cfg, run_dir)
    out_dir = run_dir.stage_dir(STAGE)
    pairs = _read(cfg, out_dir)
    device = models.resolve_device(cfg.runtime.device)
    policy, tokenizer, start = _start_model(cfg, run_dir, device)
    ctx = _Ctx(cfg, out_dir, tokenizer, _keys(cfg, run_dir, start.stage), _fault_tolerance(cfg),
               Heartbeat(run_dir.heartbeat_path(STAGE), STAGE), use_cpu=device == "cpu")
    metrics: dict[str, Any] = {"pairs/general": len(pairs.general_train) + len(pairs.general_val),
                               "pairs/domain": len(pairs.domain_train) + len(pairs.domain_val),
                               "pairs/quarantined": pairs.quarantined}
    # reward model + confidence filter
    kept, report = pairs.domain_train, None
    if cfg.align.reward.enabled:
        kept, report, rm_metrics = _reward_and_filter(ctx, policy, pairs)
        metrics |= rm_metrics
    if not kept:
        raise DataError("align: the confidence filter dropped every domain pair; check the pairs' labels, "
                        "lower align.filter.level or set align.filter.enabled=false")
    # DPO
    if cfg.align.method == "qlora":
        policy = _quantized_policy(start, policy, device, cfg.align.activation_checkpointing)
    model, before, after, records = _dpo(ctx, policy, kept, pairs.domain_val)
    metrics |= {f"dpo_before/{k.removeprefix('eval_')}": v for k, v in before.items()}
    metrics |= {f"dpo_after/{k.removeprefix('eval_')}": v for k, v in after.items()}
    metrics["dpo/steps"] = max((r["step"] for r in records), default=0)
    # save
    _save_model(model, tokenizer, out_dir, start.stage)
    if start.from_previous_stage:
        discard(run_dir, STAGE)  # merged into the saved model
    atomic_write_json(out_dir / "align.json", {"metrics": metrics, "started_from": start.stage or "base"})
    outputs = {"model": "model", "report": "align.json", "rejects": "rejects.jsonl", "metrics": "dpo/metrics.jsonl",
               **_plots(ctx, [{"step": 0, **before}, *records] if before else records, report)}
    if cfg.align.reward.enabled:
        outputs["reward_model"] = "reward_model"
    if report is not None:
        outputs["filter"] = "filter.jsonl"
    # manifest
    return StageResult(outputs=outputs, metrics=metrics | run_dir.restarts(STAGE).for_manifest(),
                       summary=_summary(metrics))


def _plots(ctx: _Ctx, dpo_records: list[dict[str, Any]], report) -> dict[str, str]:
    """The reward-margin plot, and the training loss of every phase this run went through (a phase
    reused from an earlier attempt plots the log it wrote then)."""
    outputs = {"plot": MARGIN_PLOT}
    plot_alignment(dpo_records, report, ctx.out_dir / MARGIN_PLOT, f"{ctx.cfg.name}: DPO reward margin")
    phases = [(name, _read_log(ctx.out_dir / name / "metrics.jsonl")) for name in ctx.phases]
    if plot_phase_losses(phases, ctx.out_dir / LOSS_PLOT, f"{ctx.cfg.name}: align"):
        outputs["loss_curves"] = LOSS_PLOT
    return outputs


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _quantized_policy(start, policy, device, activation_checkpointing: bool):
    """QLoRA (CUDA only): the DPO policy is the start model reloaded in 4-bit."""
    del policy
    from peft import prepare_model_for_kbit_training

    quantized = models.load_model(start.model, device=device, quantize_4bit=True, method_key="align.method")
    return prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=activation_checkpointing)


def _summary(m: dict[str, Any]) -> str:
    parts = []
    if "filter/kept" in m:
        parts.append(f"filter kept {m['filter/kept']}/{m['filter/pairs']} pairs")
    acc = m.get("reward_stage2/accuracy_domain", m.get("reward_stage1/accuracy_domain"))
    if acc is not None:
        parts.append(f"RM held-out acc {acc:.2f}")
    if "dpo_after/rewards/margins" in m:
        parts.append(f"DPO held-out margin {m.get('dpo_before/rewards/margins', 0):.3f} → "
                     f"{m['dpo_after/rewards/margins']:.3f}")
    parts.append(f"{m['dpo/steps']} DPO steps")
    return ", ".join(parts)
