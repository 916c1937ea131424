"""Q8_0 with searched per-block scales (export/q8_scales.py): a standard Q8_0 tensor any reader
dequantizes, byte-identical to llama.cpp's reference on weights already on a Q8_0 grid, and with a
lower activation-weighted (layer output) error than the reference elsewhere."""

from __future__ import annotations

import gguf
import numpy as np
import torch

from domaintune.export.gguf_writer import write_gguf
from domaintune.export.q8_scales import input_importance, quantize_q8_0, squared_error

Q8 = gguf.GGMLQuantizationType.Q8_0


def _weights(rows=64, cols=256, seed=0):
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.02).astype(np.float32)


def test_weights_on_a_q8_0_grid_come_out_byte_identical_to_the_reference():
    w = _weights()
    reference = gguf.quants.quantize(w, Q8)
    on_grid = gguf.quants.dequantize(reference, Q8).reshape(w.shape)  # what an untouched GGUF import holds
    importance = np.random.default_rng(1).uniform(0, 3, w.shape[1]).astype(np.float32)
    assert np.array_equal(quantize_q8_0(on_grid), reference)
    assert np.array_equal(quantize_q8_0(on_grid, importance), reference)


def test_searched_scales_are_valid_q8_0_and_lower_the_weighted_error_of_every_block():
    w = _weights()
    importance = np.random.default_rng(2).lognormal(0, 1.5, w.shape[1]).astype(np.float32)
    ref, ours = gguf.quants.quantize(w, Q8), quantize_q8_0(w, importance)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    back_ref = gguf.quants.dequantize(ref, Q8).reshape(w.shape)
    back = gguf.quants.dequantize(ours, Q8).reshape(w.shape)
    per_block = lambda b: (importance * (b - w) ** 2).reshape(-1, 32).sum(1)  # noqa: E731
    assert np.all(per_block(back) <= per_block(back_ref))
    assert per_block(back).sum() < 0.9 * per_block(back_ref).sum()
    assert squared_error(w, quantize_q8_0(w)) < squared_error(w, ref)  # unweighted: the weights' own error


def test_weighting_by_input_activations_lowers_the_layer_output_error():
    """E‖(Ŵ − W)a‖² over activations with a few loud channels: what importance weighting is for."""
    rng = np.random.default_rng(3)
    w = _weights(128, 256, seed=4)
    scale = np.where(rng.random(256) < 0.05, 20.0, 1.0).astype(np.float32)  # outlier channels, as in LLMs
    acts = rng.standard_normal((512, 256)).astype(np.float32) * scale
    importance = (acts ** 2).mean(0)
    out_err = lambda packed: float(((acts @ (gguf.quants.dequantize(packed, Q8).reshape(w.shape) - w).T) ** 2).sum())  # noqa: E731,E501
    assert out_err(quantize_q8_0(w, importance)) < 0.85 * out_err(gguf.quants.quantize(w, Q8))


def test_input_importance_has_one_mean_square_per_input_column(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    stats = input_importance(model, [[1, 5, 9, 3, 7, 2], [4, 4, 8]])
    linears = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(stats) == set(linears)
    for name, values in stats.items():
        assert values.shape == (linears[name].in_features,) and np.all(values >= 0) and values.sum() > 0


def test_the_writer_uses_the_search_only_with_calibration_statistics(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    importance = input_importance(model, [list(range(3, 60))])
    plain = write_gguf(tiny_model_dir, tmp_path / "plain.gguf", "q8_0")
    searched = write_gguf(tiny_model_dir, tmp_path / "searched.gguf", "q8_0", importance=importance)
    assert plain["q8_0_scales"] == "reference max/127" and searched["q8_0_scales"] == "activation-weighted search"
    assert plain["bytes"] == searched["bytes"]  # the same standard layout: only scales and values differ
    a, b = gguf.GGUFReader(tmp_path / "plain.gguf"), gguf.GGUFReader(tmp_path / "searched.gguf")
    changed = [t.name for t, u in zip(a.tensors, b.tensors, strict=True)
               if t.tensor_type == Q8 and not np.array_equal(t.data, u.data)]
    assert changed and "token_embd.weight" not in changed  # embeddings have no Linear input statistics
