"""Our GGUF files in llama.cpp's own runtime (llama-cpp-python, the optional extra): the tokenizer
llama.cpp builds from the file gives transformers' token ids, and its forward pass gives the source
model's logits — for the Llama writer and for Gemma-3 (1 + w norms, sliding window, SentencePiece
scores, embedding scale), which transformers' GGUF reader alone cannot vouch for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domaintune.export.gguf_writer import write_gguf

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (optional extra) is not installed")

TEXTS = ["The bank charges a fee of 15 dollars for international wire transfers.",
         "海港银行的跨境汇款手续费为每笔十五美元。 ✓ é  two  spaces",
         "def main():\n    return 0  # Python"]


def _runtime(path: Path):
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, logits_all=True, n_threads=1,
                           verbose=False)


def _check(folder: Path, path: Path, max_rel_diff: float) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    llm = _runtime(path)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok(
            text, add_special_tokens=False).input_ids, text
    ids = tok(" ".join(TEXTS) * 8, add_special_tokens=False).input_ids[:200]  # longer than Gemma's window
    llm.reset()
    llm.eval(ids)
    theirs = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    with torch.inference_mode():
        ours = ref(torch.tensor([ids])).logits[0].numpy()
    rel = np.abs(theirs - ours).max() / np.abs(ours).max()
    top1 = (theirs.argmax(-1) == ours.argmax(-1)).mean()
    print(f"{path.name}: {len(ids)} tokens, max |Δlogit| / max |logit| {rel:.2e}, top-1 agreement {top1:.3f}")
    assert rel < max_rel_diff and top1 > 0.97, (rel, top1)


def test_llama_cpp_runs_our_llama_f16_file_like_transformers(tmp_path, tiny_model_dir):
    write_gguf(tiny_model_dir, tmp_path / "tiny-f16.gguf", "f16")
    _check(tiny_model_dir, tmp_path / "tiny-f16.gguf", 0.02)


def test_llama_cpp_runs_our_gemma3_f16_file_like_transformers(tmp_path):
    from fixtures.tiny_gemma3 import build_tiny_gemma3_dir

    folder = build_tiny_gemma3_dir(tmp_path / "gemma3")
    write_gguf(folder, tmp_path / "g3-f16.gguf", "f16")
    _check(folder, tmp_path / "g3-f16.gguf", 0.02)
