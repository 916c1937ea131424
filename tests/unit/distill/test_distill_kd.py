"""Distillation pieces on tiny models: layer choice, the pruned student is the teacher's own layers,
the top-k KL is zero for the teacher itself and positive otherwise, and KD moves the student towards
the teacher faster than plain cross-entropy on the same rows and steps."""

from __future__ import annotations

import pytest
import torch

from domaintune.config.distill import DistillConfig, StudentConfig
from domaintune.distill import teacher_cache
from domaintune.distill.stage import train_student
from domaintune.distill.student import kept_layers, prune_layers
from domaintune.errors import ConfigError


def test_kept_layers_spread_evenly_or_drop_one_deep_block():
    spread = kept_layers(30, 15, "spread")
    assert len(spread) == 15 and spread[0] == 0 and spread[-1] == 29
    assert kept_layers(30, 8, "spread") == [0, 4, 8, 12, 17, 21, 25, 29]
    assert kept_layers(4, 2, "spread") == [0, 3] and kept_layers(2, 1, "spread") == [0]
    assert kept_layers(30, 15) == [*range(14), 29]  # default deep_block: one contiguous block before the last dropped
    with pytest.raises(ConfigError, match="not fewer"):
        kept_layers(4, 4)


def _teacher(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_pruned_student_is_made_of_the_teachers_layers(tiny_model_dir):
    teacher, tok = _teacher(tiny_model_dir)
    student, chosen = prune_layers(teacher, 1)
    assert chosen == [0] and student.config.num_hidden_layers == 1 and len(teacher.model.layers) == 2
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)
    assert student.model.layers[0].mlp.up_proj.weight is not teacher.model.layers[0].mlp.up_proj.weight
    ids = tok("The bank", return_tensors="pt").input_ids
    assert student.generate(ids, max_new_tokens=2, do_sample=False).shape[1] == ids.shape[1] + 2


def _rows(tok, n: int = 8):
    from datasets import Dataset

    from fixtures.tiny_model import TRAINING_TEXT

    rows = []
    for text in TRAINING_TEXT[:n]:
        ids = tok(text, add_special_tokens=False).input_ids[:32]
        rows.append({"input_ids": ids, "segment_lengths": [len(ids)], "segment_streams": [0], "bucket": 32,
                     "length": len(ids)})
    return Dataset.from_list(rows)


def _held_out_kl(teacher, student, ds) -> float:
    cache = teacher_cache.build(teacher, ds, list(range(len(ds))), 512, 1.0, 0, path=None)
    from domaintune.training.collate import collate_packed, packed_rows

    b = collate_packed(packed_rows(ds, list(range(len(ds)))), 0)
    values, ids = teacher_cache.batch_targets(cache, list(range(len(ds))), b["input_ids"].shape[1])
    with torch.no_grad():
        logits = student(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
    return float(teacher_cache.topk_kl(logits, values, ids, b["labels"], 1.0))


def test_topk_kl_is_zero_for_the_teacher_itself(tiny_model_dir):
    teacher, tok = _teacher(tiny_model_dir)
    ds = _rows(tok, 4)
    assert _held_out_kl(teacher, teacher, ds) == pytest.approx(0.0, abs=1e-4)
    student, _ = prune_layers(teacher, 1)
    assert _held_out_kl(teacher, student, ds) > 1e-3


def test_kd_brings_the_student_closer_to_the_teacher_than_cross_entropy(tiny_model_dir, tmp_path):
    teacher, tok = _teacher(tiny_model_dir)
    train, held = _rows(tok, 8), _rows(tok, 12).select(range(8, 12))
    d = DistillConfig(student=StudentConfig(layers=1), steps=20, batch_rows=4, lr=3e-3, kd_weight=1.0, top_k=64)
    plan = [[i % 8, (i + 1) % 8, (i + 2) % 8, (i + 3) % 8] for i in range(d.steps)]
    cache = teacher_cache.build(teacher, train, list(range(8)), d.top_k, 1.0, tok.pad_token_id,
                                tmp_path / "cache.safetensors")
    assert (tmp_path / "cache.safetensors").is_file()
    assert teacher_cache.build(teacher, train, [0, 1], d.top_k, 1.0, tok.pad_token_id,
                               tmp_path / "cache.safetensors").keys() == cache.keys()  # reused, not recomputed
    kls = {}
    for name, c in (("kd", cache), ("ce", None)):
        torch.manual_seed(0)
        student, _ = prune_layers(teacher, 1)
        for p in student.parameters():
            p.requires_grad_(True)
        records = train_student(student, train, plan, d, tok.pad_token_id, c, log_every=100)
        assert len(records) == 20
        kls[name] = _held_out_kl(teacher, student.eval(), held)
    assert kls["kd"] < kls["ce"], kls
