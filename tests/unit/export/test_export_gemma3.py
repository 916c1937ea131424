"""Gemma-3 text models as GGUF: a tiny random Gemma3ForCausalLM (6 layers: sliding and global attention,
random norm weights, a Gemma-style byte-fallback tokenizer) written by our writer, reloaded by
transformers (`gguf_file=`) and verified against the source within the format's tolerance; the
layout llama.cpp's gemma3 expects; configs llama.cpp would compute differently are refused."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from domaintune.config.export import ExportConfig
from domaintune.errors import ModelError
from domaintune.export import gguf_gemma3, modelfile, verify
from domaintune.export.gguf_writer import write_gguf
from fixtures.tiny_gemma3 import GEMMA3_CHAT_TEMPLATE, build_tiny_gemma3_dir

TEXTS = ["The bank charges a fee of 15 dollars for international wire transfers. 海港银行的跨境汇款手续费。 ✓ é"] * 8


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory) -> Path:
    return build_tiny_gemma3_dir(tmp_path_factory.mktemp("gemma3") / "model")


def _reload(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def _reference(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _compare(folder: Path, path: Path, fmt: str, info: dict) -> dict:
    ref, ref_tok = _reference(folder)
    model, tok = _reload(path)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    return verify.compare(ref, ref_tok, 4 * sum(p.numel() for p in ref.parameters()),
                          verify.Candidate(fmt, model, tok, info["bytes"]), TEXTS, 512, 4)


@pytest.mark.parametrize("fmt", ["f16", "q8_0"])  # (4-bit: a random tiny model's near-tied logits flip)
def test_tiny_gemma3_round_trips_within_the_format_tolerance(tmp_path, gemma3_dir, fmt):
    info = write_gguf(gemma3_dir, tmp_path / f"g3-{fmt}.gguf", fmt)
    assert info["metadata_from"] == "built"
    assert info["tensor_types"]["F32"] == 6 * 6 + 1  # 4 norms + q/k norms per layer, the final norm
    row = _compare(gemma3_dir, tmp_path / f"g3-{fmt}.gguf", fmt, info)
    assert row["same_token_ids"] and row["tokens"] > 128  # a window far longer than the 32-token sliding one
    assert verify.violations(row, ExportConfig().tolerance_for(fmt)) == []
    if fmt == "f16":
        assert row["max_abs_logit_diff"] < 1e-2 and abs(row["ppl_rise_pct"]) < 0.01 and row["greedy_same"] == 4
    if fmt == "q8_0":
        assert row["kl"] < 5e-3 and row["smaller"] > 3


def test_without_the_one_plus_w_norm_shift_verification_fails(tmp_path, gemma3_dir, monkeypatch):
    """Guard the guard: norms written as HF stores them (w, not 1 + w) load fine and are caught."""
    monkeypatch.setattr(gguf_gemma3, "norm_shift", lambda name: 0.0)
    info = write_gguf(gemma3_dir, tmp_path / "unshifted.gguf", "f16")
    row = _compare(gemma3_dir, tmp_path / "unshifted.gguf", "f16", info)
    assert verify.violations(row, ExportConfig().tolerance_for("f16"))


def test_the_file_has_llama_cpps_gemma3_layout(tmp_path, gemma3_dir):
    from safetensors.numpy import load_file

    write_gguf(gemma3_dir, tmp_path / "g3.gguf", "q8_0")
    reader = gguf.GGUFReader(tmp_path / "g3.gguf")
    f = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "gemma3"
    assert (f["gemma3.attention.key_length"], f["gemma3.attention.value_length"]) == (256, 256)
    assert f["gemma3.attention.sliding_window"] == 32 and f["gemma3.rope.freq_base_swa"] == 10000.0
    assert f["gemma3.rope.freq_base"] == 1_000_000.0 and "gemma3.final_logit_softcapping" not in f
    assert f["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in f
    assert f["tokenizer.ggml.add_space_prefix"] is False and f["tokenizer.ggml.add_bos_token"] is True
    assert f["tokenizer.chat_template"] == GEMMA3_CHAT_TEMPLATE
    tokens, types, scores = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"], f["tokenizer.ggml.scores"]
    assert tokens[:3] == ["<pad>", "<eos>", "<bos>"] and f["tokenizer.ggml.bos_token_id"] == 2
    assert {types[tokens.index(t)] for t in ("<0x00>", "<0xE2>")} == {int(gguf.TokenType.BYTE)}
    assert types[tokens.index("<start_of_turn>")] == int(gguf.TokenType.CONTROL)
    # earlier merges score higher: llama.cpp's SentencePiece loop then replays the BPE merge order
    merges = json.loads((gemma3_dir / "tokenizer.json").read_text())["model"]["merges"]
    first, later = ("".join(m) for m in (merges[0], merges[50]))
    assert scores[tokens.index(first)] > scores[tokens.index(later)]
    names = {t.name: t for t in reader.tensors}
    assert "output.weight" not in names  # tied head: llama.cpp uses token_embd
    assert {"blk.5.post_ffw_norm.weight", "blk.5.attn_q_norm.weight", "blk.0.post_attention_norm.weight",
            "blk.0.ffn_norm.weight"} <= set(names)
    hf = load_file(str(gemma3_dir / "model.safetensors"))
    for gguf_name, hf_name in (("blk.1.attn_k_norm.weight", "model.layers.1.self_attn.k_norm.weight"),
                               ("output_norm.weight", "model.norm.weight")):
        assert np.array_equal(names[gguf_name].data, hf[hf_name] + 1.0)


def test_the_modelfile_renders_gemma3s_template_like_apply_chat_template(gemma3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma3_dir)
    text, info = modelfile.build("g3-q8_0.gguf", tok, 512)
    assert info["family"] == "gemma" and info["render_equal"], info["differences"]
    assert 'PARAMETER stop "<end_of_turn>"' in text and 'PARAMETER stop "<eos>"' in text


def _variant(tmp_path: Path, gemma3_dir: Path, **changes) -> Path:
    folder = tmp_path / "variant"
    folder.mkdir()
    for f in gemma3_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("changes,message", [
    ({"query_pre_attn_scalar": 64}, r"query_pre_attn_scalar 64 \(llama.cpp uses 256\)"),
    ({"layer_types": ["full_attention"] * 6}, r"layer_types .*every 6th layer global"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}, "rope scaling"),
    ({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}, r"vision tower.*mmproj"),
    ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}, r"Gemma 1/2.*only Gemma-3 text"),
])
def test_configs_llama_cpp_would_compute_differently_are_refused(tmp_path, gemma3_dir, changes, message):
    folder = _variant(tmp_path, gemma3_dir, **changes)
    with pytest.raises(ModelError, match=message):
        write_gguf(folder, tmp_path / "x.gguf", "f16")
    assert not list(tmp_path.glob("x.gguf*"))
