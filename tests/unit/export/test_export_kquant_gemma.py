"""The two GGUF paths this machine cannot run for real: Gemma-3 is refused naming why, and the
K-quant path (llama-cpp-python's quantizer from our F16 file) runs against a stand-in module."""

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


def test_a_tiny_gemma3_text_model_is_refused_naming_why_and_what_to_use(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                              max_position_embeddings=256, sliding_window=64)
    folder = tmp_path / "gemma3"
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(ModelError, match=r"Gemma3ForCausalLM is not written.*SentencePiece.*1\+w.*"
                                         r"convert_hf_to_gguf.py.*export.quantize: int8"):
        write_gguf(folder, tmp_path / "g.gguf", "q8_0")
    assert not list(tmp_path.glob("g.gguf*"))  # refused before anything is written


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
    assert info == {"format": "q4_k_m", "file": "t-q4_k_m.gguf", "metadata_from": "llama.cpp", "tensor_types": {},
                    "bytes": (tmp_path / "t-q4_k_m.gguf").stat().st_size}
    types_written = {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "t-q4_k_m.gguf").tensors}
    assert types_written == {"F16", "F32"}  # what the quantizer was given: our F16 writer's file


def test_a_failing_k_quant_leaves_no_file_and_says_so(tmp_path, tiny_model_dir, monkeypatch):
    _stand_in(monkeypatch, 3)
    with pytest.raises(ModelError, match="quantizer failed for q4_k_m.*return code 3"):
        write_gguf(tiny_model_dir, tmp_path / "t-q4_k_m.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []
