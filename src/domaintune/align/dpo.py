"""DPO with trl's DPOTrainer (public constructor + DPOConfig).

* Reference model, memory-efficiently: with LoRA/QLoRA the trainer gets the plain model and a
  `peft_config`; trl then computes the reference log-probs with the adapter disabled, so no second
  copy of the weights exists. Full fine-tuning needs a frozen copy (`ref_model`).
* SFT-loss mixing (limits drift from the reference): trl 1.16 combines losses with
  `loss_type=["sigmoid", "sft"]` and `loss_weights=[1, sft_weight]` (it has no `rpo_alpha`).
* Held-out evaluation reports trl's eval_loss, eval_rewards/margins and eval_rewards/accuracies.
* trl's padding_free is left off: it falls back to padding in 1.16 anyway, and flattened batches
  would need use_cache=False verified per sample (DESIGN.md pitfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domaintune.extras import require
from domaintune.training.hf_trainer import activation_checkpointing, precision_args, without_log_printer


@dataclass(frozen=True)
class DPOSettings:
    beta: float
    sft_weight: float
    epochs: int
    max_steps: int | None
    lr: float
    batch_size: int
    grad_accum: int
    max_len: int
    eval_every: int | None
    seed: int
    use_cpu: bool
    precision: str = "fp32"  # align.precision
    activation_checkpointing: bool = False  # align.activation_checkpointing


def loss_mix(sft_weight: float) -> dict[str, Any]:
    if sft_weight <= 0:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def dpo_args(s: DPOSettings, output_dir, checkpoint_args: dict[str, Any], has_eval: bool):
    DPOConfig = require("trl", "align", "the align stage (DPO)").DPOConfig

    steps = {"max_steps": s.max_steps} if s.max_steps else {"num_train_epochs": s.epochs}
    evals = ({"eval_strategy": "steps", "eval_steps": s.eval_every} if has_eval and s.eval_every
             else {"eval_strategy": "no"})
    return DPOConfig(output_dir=str(output_dir), beta=s.beta, learning_rate=s.lr,
                     per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=s.batch_size,
                     gradient_accumulation_steps=s.grad_accum, max_length=s.max_len, seed=s.seed,
                     use_cpu=s.use_cpu, padding_free=False, **precision_args(s.precision),
                     report_to=[], logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
                     **activation_checkpointing(s.activation_checkpointing), **loss_mix(s.sft_weight), **steps,
                     **evals, **checkpoint_args)


def build_dpo_trainer(model, tokenizer, train_rows: list[dict], val_rows: list[dict], s: DPOSettings, output_dir,
                      checkpoint_args: dict[str, Any], callbacks: list, peft_config=None, ref_model=None):
    """`peft_config` (LoRA/QLoRA): reference = the same model with the adapter disabled.
    Otherwise (full) pass a frozen `ref_model`."""
    from datasets import Dataset
    DPOTrainer = require("trl", "align", "the align stage (DPO)").DPOTrainer

    eval_dataset = Dataset.from_list(val_rows) if val_rows else None
    args = dpo_args(s, output_dir, checkpoint_args, bool(val_rows))
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args,
                         train_dataset=Dataset.from_list(train_rows), eval_dataset=eval_dataset,
                         processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    return without_log_printer(trainer)


def heldout_metrics(trainer) -> dict[str, float]:
    """eval loss, reward margin and reward accuracy of the current policy on the held-out pairs."""
    if trainer.eval_dataset is None:
        return {}
    out = trainer.evaluate()
    keep = ("eval_loss", "eval_rewards/margins", "eval_rewards/accuracies", "eval_rewards/chosen",
            "eval_rewards/rejected")
    return {k: float(v) for k, v in out.items() if k in keep}
