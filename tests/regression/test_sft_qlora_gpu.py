"""QLoRA SFT on a CUDA GPU (4-bit NF4 base via bitsandbytes): skipped cleanly elsewhere."""

import importlib.util
import json

import pytest
import torch

from domaintune import models
from domaintune.artifacts import RunDir
from domaintune.config import Config
from domaintune.sft import stage as sft_stage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
                                reason="QLoRA needs a CUDA GPU and bitsandbytes")


def test_qlora_trains_two_steps_and_the_adapter_loads_on_the_full_precision_base(tmp_path, tiny_model_dir):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}) + "\n"
                            for i in range(20)), encoding="utf-8")
    cfg = Config.model_validate({"name": "qlora", "runs_dir": str(tmp_path / "runs"),
                                 "model": {"base": str(tiny_model_dir)},
                                 "sft": {"data": [{"path": str(data)}], "method": "qlora", "max_steps": 2,
                                         "batch_size": 4, "max_len": 128, "report_to": []}})
    run_dir = RunDir(cfg.run_path)
    result = sft_stage.run(cfg, run_dir)
    assert result.metrics["steps"] == 2 and result.metrics["val_loss"] is not None
    model = models.load_trained(run_dir.root / "sft" / result.outputs["model"], base=cfg.model).model
    assert models.is_adapter_dir(run_dir.root / "sft" / "model") and model is not None
