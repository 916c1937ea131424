"""The student: a layer-pruned copy of the teacher, or another model (same tokenizer for logit KD)."""

from __future__ import annotations

import copy

from domaintune.config.distill import StudentConfig
from domaintune.errors import ConfigError


def kept_layers(n: int, keep: int, prune: str = "deep_block") -> list[int]:
    """`keep` layer indices of `n` (layer-dropping init): evenly spaced, first and last included
    ("spread"), or the first keep−1 and the last ("deep_block": one contiguous block dropped)."""
    if keep >= n:
        raise ConfigError([f"distill.student.layers: {keep} is not fewer than the teacher's {n} layers"])
    if keep == 1:
        return [0]
    if prune == "deep_block":
        return [*range(keep - 1), n - 1]
    return sorted({round(i * (n - 1) / (keep - 1)) for i in range(keep)})


def prune_layers(teacher, keep: int | None, prune: str = "deep_block"):
    """A deep copy of `teacher` (merged, no adapter) with only the kept decoder layers."""
    import torch

    layers = teacher.model.layers
    keep = keep or max(1, len(layers) // 2)
    chosen = kept_layers(len(layers), keep, prune)
    student = copy.deepcopy(teacher)
    student.model.layers = torch.nn.ModuleList([student.model.layers[i] for i in chosen])
    for new, layer in enumerate(student.model.layers):
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new  # the KV cache is indexed by position in the list
    student.config.num_hidden_layers = len(chosen)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in chosen]
    return student, chosen


def build_student(cfg: StudentConfig, teacher, device: str):
    """(student model, its tokenizer or None for the teacher's, a description for the manifest)."""
    if cfg.init == "prune_layers":
        student, chosen = prune_layers(teacher, cfg.layers, cfg.prune)
        return student, None, {"init": "prune_layers", "prune": cfg.prune, "layers": chosen}
    from pathlib import Path

    from domaintune import models
    from domaintune.config import ModelConfig

    if Path(cfg.path).exists():
        trained = models.load_trained(cfg.path, device=device)
        model, tok = trained.model, trained.tokenizer
    else:
        mc = ModelConfig(base=cfg.path)
        model, tok = models.load_model(mc, device=device), models.load_tokenizer(mc)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, tok, {"init": "path", "path": cfg.path}


def same_vocabulary(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()
