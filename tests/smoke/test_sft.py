"""The SFT example end to end on a tiny random model: data -> sft -> eval -> export, with the
training chat template carried into the exported model; QLoRA is refused on CPU by `validate`."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from fixtures.cli import invoke as _invoke

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sft" / "domaintune.yaml"


def _overrides(tiny_model_dir: Path, runs: Path) -> list[str]:
    return [f"model.base={tiny_model_dir}", f"runs_dir={runs}", "sft.max_steps=3", "sft.eval_every=2",
            "sft.max_len=512", "sft.template=chatml", "eval.max_docs=4", "eval.window=64", "eval.stride=64",
            "export.max_new_tokens=4", "runtime.threads=1"]



def test_sft_example_runs_end_to_end(tmp_path, tiny_model_dir):
    _invoke("validate", str(EXAMPLE), *_overrides(tiny_model_dir, tmp_path))
    _invoke("run", str(EXAMPLE), *_overrides(tiny_model_dir, tmp_path))
    run = tmp_path / "sft-bank"
    for stage in ("data", "sft", "eval", "export"):
        assert (run / stage / "manifest.json").is_file(), stage
    assert not (run / "train").exists()  # no mix section: no continual pre-training
    sft = json.loads((run / "sft" / "manifest.json").read_text())
    assert sft["metrics"]["quarantined"] == 2 and sft["metrics"]["steps"] == 3
    assert sft["metrics"]["val_loss"] > 0 and "val/loss/zh" in sft["metrics"]
    eval_manifest = json.loads((run / "eval" / "manifest.json").read_text())
    assert "sft" in eval_manifest["upstream"]
    export = json.loads((run / "export" / "model" / "domaintune_export.json").read_text())
    assert export["source_stage"] == "sft"
    exported = AutoTokenizer.from_pretrained(run / "export" / "model").chat_template
    assert "{% generation %}" in exported  # the shipped chatml template used in training, not the base's


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_qlora_is_refused_on_cpu_with_a_clear_message(tmp_path, tiny_model_dir):
    out = _invoke("validate", str(EXAMPLE), *_overrides(tiny_model_dir, tmp_path), "sft.method=qlora", code=2).output
    assert "sft.method: 'qlora'" in out and "CUDA GPU" in out and "'lora'" in out
    if importlib.util.find_spec("bitsandbytes") is None:  # printed as text, not eaten as rich markup
        assert "pip install 'domaintune[qlora]'" in " ".join(out.split())
