"""Reward model training with trl's RewardTrainer (public constructor + RewardConfig).

The reward model is the start model with a one-output score head (sequence classification),
trained on preference pairs with the Bradley-Terry loss. The two-stage recipe trains it first on
general preference data, then continues on the domain pairs. `pair_margins` scores pairs
(reward(chosen) - reward(rejected)), optionally with Monte-Carlo dropout, for the held-out
accuracy and the confidence filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from domaintune.config import AdapterConfig
from domaintune.extras import require
from domaintune.models import evaluating
from domaintune.training.hf_trainer import activation_checkpointing, precision_args, without_log_printer


@dataclass(frozen=True)
class RewardSettings:
    epochs: int
    max_steps: int | None
    lr: float
    batch_size: int
    max_len: int
    seed: int
    use_cpu: bool
    precision: str = "fp32"  # align.precision
    activation_checkpointing: bool = False  # align.activation_checkpointing


def reward_model_from(causal_lm, tokenizer, seed: int):
    """A sequence-classification twin of `causal_lm` (same backbone weights, new 1-output head)."""
    from transformers import AutoModelForSequenceClassification

    config = causal_lm.config.__class__.from_dict({**causal_lm.config.to_dict(), "num_labels": 1,
                                                    "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(seed)  # the score head starts random
    model = AutoModelForSequenceClassification.from_config(config)
    model.base_model.load_state_dict(causal_lm.base_model.state_dict())
    return model.to(causal_lm.device)


def reward_peft_config(adapter: AdapterConfig):
    """LoRA for a reward model: SEQ_CLS makes peft train and save the new score head in full."""
    from peft import TaskType

    from domaintune.models import build_peft_config

    return replace(build_peft_config(adapter), task_type=TaskType.SEQ_CLS)


def reward_args(s: RewardSettings, output_dir, checkpoint_args: dict[str, Any]):
    RewardConfig = require("trl", "align", "the align stage (reward model)").RewardConfig

    steps = {"max_steps": s.max_steps} if s.max_steps else {"num_train_epochs": s.epochs}
    return RewardConfig(output_dir=str(output_dir), learning_rate=s.lr, per_device_train_batch_size=s.batch_size,
                        per_device_eval_batch_size=s.batch_size, max_length=s.max_len, seed=s.seed,
                        use_cpu=s.use_cpu, **precision_args(s.precision),
                        report_to=[], logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
                        **activation_checkpointing(s.activation_checkpointing),
                        **steps, **checkpoint_args)


def build_reward_trainer(model, tokenizer, train_rows: list[dict], s: RewardSettings, output_dir,
                         checkpoint_args: dict[str, Any], callbacks: list, peft_config=None):
    """trl's RewardTrainer through its public constructor. Pass `peft_config` for a fresh LoRA
    adapter; a model that already carries one (stage 2) continues training it."""
    RewardTrainer = require("trl", "align", "the align stage (reward model)").RewardTrainer

    trainer = RewardTrainer(model=model, args=reward_args(s, output_dir, checkpoint_args),
                            train_dataset=tokenized_pairs(tokenizer, train_rows, s.max_len),
                            processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    return without_log_printer(trainer)


def tokenized_pairs(tokenizer, rows: list[dict], max_len: int):
    """Pairs as trl's pre-tokenized format (chosen_ids/rejected_ids), cut at `max_len`.

    Tokenizing here rather than in the trainer keeps training and `pair_margins` scoring on the
    same ids, and truncates long pairs instead of trl's silent dropping of them."""
    from datasets import Dataset

    return Dataset.from_list([{"chosen_ids": encode(tokenizer, r["prompt"], r["chosen"], max_len),
                               "rejected_ids": encode(tokenizer, r["prompt"], r["rejected"], max_len)} for r in rows])


# --------------------------------------------------------------------------- scoring
def encode(tokenizer, prompt, answer, max_len: int) -> list[int]:
    """Token ids of prompt + answer, as trl's trainers build them (chat template or plain text + EOS)."""
    if isinstance(prompt, list):
        ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt + answer + tokenizer.eos_token)["input_ids"]
    return list(ids)[:max_len]


def _score_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.score


@contextmanager
def mc_dropout(model, p: float) -> Iterator[callable]:
    """Monte-Carlo dropout on the score head's input (last-layer MC dropout: works for any method,
    and Llama-style backbones have no dropout modules of their own). Dropout on every decoder
    layer was tried and rejected: a model never trained with dropout becomes so noisy that the
    SmolLM2 example kept 2 of 23 clear pairs. One mask per pass (`resample()`), shared by the
    chosen and the rejected answer: common random numbers, so a pair with identical answers has
    margin 0 in every pass and only real differences vary."""
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def on_input(_module, args):
        x, mask = args[0], state["mask"]
        if mask is None or mask.shape[-1] != x.shape[-1]:
            mask = (torch.rand(x.shape[-1], device=x.device) >= p).to(x.dtype) / (1 - p)
            state["mask"] = mask
        return (x * mask, *args[1:])

    handle = _score_head(model).register_forward_pre_hook(on_input)
    try:
        yield lambda: state.update(mask=None)
    finally:
        handle.remove()


@torch.no_grad()
def _rewards(model, seqs: list[list[int]], pad_id: int, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(chunk):
            ids[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits
        out.append(logits[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def pair_margins(model, tokenizer, rows: list[dict], max_len: int, batch_size: int = 8,
                 passes: int = 1, dropout: float = 0.0, seed: int = 0) -> torch.Tensor:
    """reward(chosen) - reward(rejected) per pair: shape [pairs, passes] (dropout passes if dropout > 0)."""
    chosen = [encode(tokenizer, r["prompt"], r["chosen"], max_len) for r in rows]
    rejected = [encode(tokenizer, r["prompt"], r["rejected"], max_len) for r in rows]
    pad = tokenizer.pad_token_id
    with evaluating(model):
        torch.manual_seed(seed)
        if dropout <= 0:
            return (_rewards(model, chosen, pad, batch_size) - _rewards(model, rejected, pad, batch_size))[:, None]
        samples = []
        with mc_dropout(model, dropout) as resample:
            for _ in range(passes):
                resample()
                samples.append(_rewards(model, chosen, pad, batch_size) - _rewards(model, rejected, pad, batch_size))
        return torch.stack(samples, dim=1)


def pair_accuracy(margins: torch.Tensor) -> float:
    """Share of pairs whose (mean) margin prefers the chosen answer."""
    return float((margins.mean(dim=1) > 0).float().mean()) if len(margins) else float("nan")
