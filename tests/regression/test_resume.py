"""Fault injection: a training run killed (SIGKILL) and resumed ends exactly where an
uninterrupted run ends — same rows consumed at every step, same losses, same weights."""

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fixtures.quickstart import make_quickstart_workdir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CRASHING_CLI = Path(__file__).with_name("crashing_cli.py")
STEPS = 16  # ~10 steps per epoch with these settings: step 13 is mid-epoch 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    return make_quickstart_workdir(tmp_path_factory.mktemp("resume"))


def _args(work, tiny, name, *extra):
    return [str(work / "domaintune.yaml"), f"name={name}", f"model.base={tiny}", "mix.tokens=5k",
            "mix.buckets=[64,128]", "mix.heldout_tokens=0", f"train.max_steps={STEPS}", "train.batch_tokens=128",
            "train.grad_accum=2", "train.save_every=1", "train.keep_last=3", "train.report_to=[]",
            "runtime.threads=1", *extra]


def _run(args, crash=None):
    cmd = [sys.executable, str(CRASHING_CLI), *crash, *args] if crash else [sys.executable, "-m", "domaintune", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def _train(work, tiny, name, *extra, crash=None):
    res = _run(["train", *_args(work, tiny, name, *extra)], crash)
    if crash:
        assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-2000:]
    else:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def _prepare(work, tiny, name):
    """data + mix once; other runs copy them (their fingerprints do not depend on the run name)."""
    runs = work / "runs"
    if not (runs / "base" / "mix" / "manifest.json").is_file():
        res = _run(["run", *_args(work, tiny, "base"), "--stages", "data,mix"])
        assert res.returncode == 0, res.stdout[-2000:]
    for stage in ("data", "mix"):
        shutil.copytree(runs / "base" / stage, runs / name / stage, dirs_exist_ok=True)
    return runs / name / "train"


def _metrics(train_dir):
    return [json.loads(x) for x in (train_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a_dir, b_dir):
    a, b = _metrics(a_dir), _metrics(b_dir)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b):
        assert ra["rows"] == rb["rows"], ra["step"]
        assert abs(ra["train/loss"] - rb["train/loss"]) < 1e-5, ra["step"]
    wa = load_file(a_dir / "model" / "adapter_model.safetensors")
    wb = load_file(b_dir / "model" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.fixture(scope="module")
def clean(workdir, tiny_model_dir):
    train_dir = _prepare(workdir, tiny_model_dir, "clean")
    _train(workdir, tiny_model_dir, "clean")
    return train_dir


def test_crashes_of_every_kind_then_resume_equals_one_clean_run(workdir, tiny_model_dir, clean):
    """Gradient accumulation 2, ~10 steps per epoch, four interruptions:
    SIGKILL after step 4; SIGKILL while writing step 9's checkpoint (ignored, resume from 8);
    SIGKILL after step 13 (mid-epoch 2) whose weights file is then truncated (fallback to 12)."""
    train_dir = _prepare(workdir, tiny_model_dir, "crashy")
    ckpts = train_dir / "checkpoints"
    _train(workdir, tiny_model_dir, "crashy", crash=("after-save", "4"))
    assert not (train_dir / "manifest.json").exists()
    res = _train(workdir, tiny_model_dir, "crashy", crash=("during-save", "9"))
    assert "resuming from step-00000004" in res.stdout
    assert (ckpts / ".step-00000009.partial").is_dir()  # half-written: never used
    res = _train(workdir, tiny_model_dir, "crashy", crash=("after-save", "13"))
    assert "resuming from step-00000008" in res.stdout
    weights = ckpts / "step-00000013" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    res = _train(workdir, tiny_model_dir, "crashy")
    text = " ".join(res.stdout.split())
    assert "step-00000013 is unusable" in text and "resuming from step-00000012" in text
    consumed = Counter(i for r in _metrics(train_dir) for i in r["rows"])
    assert consumed == Counter(i for r in _metrics(clean) for i in r["rows"])  # nothing skipped or repeated
    _assert_same_run(clean, train_dir)
    assert (ckpts / "finished.json").is_file()


def test_resume_refuses_changed_settings_and_broken_explicit_checkpoints(workdir, tiny_model_dir):
    train_dir = _prepare(workdir, tiny_model_dir, "changed")
    _train(workdir, tiny_model_dir, "changed", crash=("after-save", "5"))
    broken = train_dir / "checkpoints" / "step-00000004"
    (broken / "optimizer.pt").write_bytes(b"garbage")
    res = _run(["train", *_args(workdir, tiny_model_dir, "changed", f"train.resume={broken}")])
    assert res.returncode == 2 and "optimizer.pt does not match its checksum" in " ".join(res.stdout.split())

    res = _run(["train", *_args(workdir, tiny_model_dir, "changed", "train.lr=0.5")])
    text = " ".join(res.stdout.split())
    assert res.returncode == 2 and "refusing to resume" in text and "train.optim.lr: 0.001 -> 0.5" in text
    res = _run(["train", *_args(workdir, tiny_model_dir, "changed", "train.lr=0.5",
                                "train.allow_config_change=true")])
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "resuming despite changed settings" in text
    assert "resuming from step-00000005" in text


def test_sigterm_checkpoints_at_a_step_boundary_and_exits_75(workdir, tiny_model_dir, clean):
    train_dir = _prepare(workdir, tiny_model_dir, "preempted")
    args = ["train", *_args(workdir, tiny_model_dir, "preempted", "train.save_every=100")]
    proc = subprocess.Popen([sys.executable, str(CRASHING_CLI), "slow", "0", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    heartbeat = train_dir / "heartbeat.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (heartbeat.is_file() and json.loads(heartbeat.read_text())["step"] >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-2000:]
    saved = [p.name for p in (train_dir / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert len(saved) == 1 and int(saved[0][5:]) >= 3  # saved at the step boundary despite save_every=100
    res = _train(workdir, tiny_model_dir, "preempted")
    assert f"resuming from {saved[0]}" in res.stdout
    _assert_same_run(clean, train_dir)
