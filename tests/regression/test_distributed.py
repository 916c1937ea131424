"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global
batch: ranks read disjoint shards of each step's micro-batches and the loss normalization makes
(2 ranks x accum 1) equal (1 rank x accum 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fixtures.quickstart import make_quickstart_workdir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _overrides(tiny_model_dir, name):
    return [f"name={name}", f"model.base={tiny_model_dir}", "mix.tokens=4k", "mix.buckets=[64,128]",
            "mix.heldout_tokens=512", "train.max_steps=3", "train.batch_tokens=256", "train.adapter.dropout=0",
            "train.report_to=[]", "runtime.threads=1"]


def _cli(*args, launcher=()):
    cmd = [*launcher, "-m", "domaintune", *args] if launcher else [sys.executable, "-m", "domaintune", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_accumulation(tmp_path, tiny_model_dir):
    make_quickstart_workdir(tmp_path)
    cfg = str(tmp_path / "domaintune.yaml")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for name in ("single", "dist", "dist-killed", "elastic"):
        _cli("run", cfg, *_overrides(tiny_model_dir, name), "--stages", "data,mix")
    _cli("train", cfg, *_overrides(tiny_model_dir, "single"), "train.grad_accum=2")
    _cli("train", cfg, *_overrides(tiny_model_dir, "dist"), "train.grad_accum=1", launcher=torchrun)

    # both ranks SIGKILLed right after the step-2 checkpoint, then relaunched: resumes at step 3
    crash = [*torchrun, str(Path(__file__).with_name("crashing_cli.py")),
             "after-save", "2"]
    killed = subprocess.run([*crash, "train", cfg, *_overrides(tiny_model_dir, "dist-killed"), "train.grad_accum=1",
                             "train.save_every=1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert killed.returncode != 0
    resumed = _cli("train", cfg, *_overrides(tiny_model_dir, "dist-killed"), "train.grad_accum=1",
                   "train.save_every=1", launcher=torchrun)
    assert "resuming from step-00000002" in resumed.stdout

    # torchrun's elastic restart: one rank dies after the step-2 checkpoint; torchrun restarts the group
    elastic = [*torchrun[:3], "--max-restarts", "1", *torchrun[3:], str(Path(__file__).with_name("crashing_cli.py")),
               "elastic", "2"]
    # torchrun shares its rendezvous store with the workers by default; a restarted group can then
    # read the previous group's gloo addresses (pytorch/pytorch#135712): give each attempt its own
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    restarted = subprocess.run([*elastic, "train", cfg, *_overrides(tiny_model_dir, "elastic"), "train.grad_accum=1",
                                "train.save_every=1"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert "torchrun restart 1: resumed at step 2" in restarted.stdout

    runs = tmp_path / "runs"
    single, dist, killed, el = ([json.loads(x) for x in (runs / n / "train" / "metrics.jsonl").read_text().splitlines()]
                                for n in ("single", "dist", "dist-killed", "elastic"))
    assert [r["step"] for r in dist] == [r["step"] for r in killed] == [r["step"] for r in el] == [1, 2, 3]
    for a, b, c, d in zip(single, dist, killed, el):
        assert abs(a["train/loss"] - b["train/loss"]) < 1e-4
        assert abs(b["train/loss"] - c["train/loss"]) < 1e-5 and b["rows"] == c["rows"]
        assert abs(b["train/loss"] - d["train/loss"]) < 1e-5 and b["rows"] == d["rows"]
        assert a["tokens"] == b["tokens"]  # both ranks' tokens are counted
    wa, wb, wc, wd = (load_file(runs / n / "train" / "model" / "adapter_model.safetensors")
                      for n in ("single", "dist", "dist-killed", "elastic"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-5), key
        assert torch.allclose(wb[key], wc[key], atol=1e-6), key
        assert torch.allclose(wb[key], wd[key], atol=1e-6), key
    assert json.loads((runs / "dist" / "train" / "manifest.json").read_text())["stage"] == "train"
    restarts = json.loads((runs / "elastic" / "train" / "manifest.json").read_text())["metrics"]["restarts"]
    assert [(r["launcher"], r["attempt"], r["resumed_step"]) for r in restarts] == [("torchrun", 1, 2)]


def test_single_process_stages_refuse_a_multi_process_launch(monkeypatch, tmp_path):
    from domaintune.artifacts import RunDir
    from domaintune.config import load_config
    from domaintune.errors import StageError
    from domaintune.pipeline import StageSpec, run_stage

    (tmp_path / "d").mkdir()
    (tmp_path / "c.yaml").write_text("name: t\nmodel: {base: org/m}\ndata: {sources: [{path: d, stream: s}]}\n"
                                     "mix: {mixture: {s: 1}, tokens: 1000}\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(tmp_path / "c.yaml")
    with pytest.raises(StageError, match="stage 'data' runs in one process"):
        run_stage(StageSpec("data", "domaintune.data", ("data",)), cfg, RunDir(cfg.run_path))
