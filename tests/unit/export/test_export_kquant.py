"""K-quants: llama-cpp-python's quantizer run from our F16 file — against a stand-in module (the call,
its ftype, cleanup on failure), and for real where llama-cpp-python is installed (the optional extra)."""

from __future__ import annotations

import ctypes
import shutil
import sys
import types
from pathlib import Path

import gguf
import pytest

from domaintune.errors import ModelError
from domaintune.export import gguf_writer
from domaintune.export.gguf_writer import write_gguf


class _Params(ctypes.Structure):
    _fields_ = [("ftype", ctypes.c_int)]


def _stand_in(monkeypatch, code: int) -> list:
    """A `llama_cpp` module with llama-cpp-python's quantize API; it "quantizes" by copying the F16 file."""
    calls = []

    def llama_model_quantize(src: bytes, dst: bytes, params) -> int:
        calls.append((Path(src.decode()), Path(dst.decode()), params._obj.ftype))
        shutil.copyfile(src.decode(), dst.decode())
        return code

    module = types.SimpleNamespace(llama_model_quantize_default_params=_Params, LLAMA_FTYPE_MOSTLY_Q4_K_M=15,
                                   llama_model_quantize=llama_model_quantize)
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setattr(gguf_writer, "llama_cpp_available", lambda: True)
    return calls


def test_k_quant_runs_llama_cpps_quantizer_from_our_f16_file(tmp_path, tiny_model_dir, monkeypatch):
    calls = _stand_in(monkeypatch, 0)
    info = write_gguf(tiny_model_dir, tmp_path / "t-q4_k_m.gguf", "q4_k_m")
    [(src, dst, ftype)] = calls
    assert ftype == 15 and src.name == "t-q4_k_m.f16-for-kquant.gguf" and dst.name == "t-q4_k_m.gguf.partial"
    assert not src.exists() and not dst.exists()  # the F16 intermediate is removed, the partial renamed
    # the types read back from the file: the stand-in copied our F16 writer's file
    assert info == {"format": "q4_k_m", "file": "t-q4_k_m.gguf", "metadata_from": "llama.cpp",
                    "tensor_types": {"F32": 5, "F16": 15}, "bytes": (tmp_path / "t-q4_k_m.gguf").stat().st_size}
    types_written = {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "t-q4_k_m.gguf").tensors}
    assert types_written == {"F16", "F32"}


def test_a_failing_k_quant_leaves_no_file_and_says_so(tmp_path, tiny_model_dir, monkeypatch):
    _stand_in(monkeypatch, 3)
    with pytest.raises(ModelError, match="quantizer failed for q4_k_m.*return code 3"):
        write_gguf(tiny_model_dir, tmp_path / "t-q4_k_m.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the real quantizer
def _tiny_llama_256(out: Path) -> Path:
    """A tiny Llama whose rows are multiples of 256 (K-quant super-blocks), so llama.cpp really K-quantizes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_q4_k_m_by_llama_cpps_quantizer_reloads_within_the_k_quant_tolerance(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (optional extra) is not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.config.export import ExportConfig
    from domaintune.export import verify

    folder = _tiny_llama_256(tmp_path / "llama256")
    info = write_gguf(folder, tmp_path / "t-q4_k_m.gguf", "q4_k_m")
    assert info["tensor_types"].get("Q4_K", 0) >= 4 and "F16" not in info["tensor_types"]
    assert not list(tmp_path.glob("*.f16-for-kquant.gguf")) and not list(tmp_path.glob("*.partial"))
    f16 = write_gguf(folder, tmp_path / "t-f16.gguf", "f16")
    assert info["bytes"] < f16["bytes"] / 2.5
    ref, ref_tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    cand = verify.Candidate("q4_k_m", AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="t-q4_k_m.gguf", dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(
        tmp_path, gguf_file="t-q4_k_m.gguf"), info["bytes"])
    texts = ["The bank charges a fee of 15 dollars for international wire transfers. 海港银行的跨境汇款手续费。"] * 8
    row = verify.compare(ref, ref_tok, 4 * sum(p.numel() for p in ref.parameters()), cand, texts, 512, 4)
    print(f"q4_k_m {info['tensor_types']}: {info['bytes']} B vs F16 {f16['bytes']} B, KL {row['kl']:.3g}, "
          f"top-1 {row['top1']:.3f}, ppl {row['ppl_rise_pct']:+.2f} %")
    assert row["same_token_ids"]
    assert verify.violations(row, ExportConfig().tolerance_for("q4_k_m")) == []
