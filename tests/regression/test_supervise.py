"""--supervise: a crashed training child is restarted and resumes exactly; user errors are not
retried; a hung child (no heartbeat) is killed and recorded as a hang."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from domaintune.config import load_config
from domaintune.supervise import (
    backoff_delay,
    describe_exit,
    load_history,
    restart_record,
    restarts_of_this_run,
    supervise,
)
from fixtures.quickstart import make_quickstart_workdir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CRASHING_CLI = Path(__file__).with_name("crashing_cli.py")
STEPS = 8
# Runs the CLI; the first invocations are killed (SIGKILL) right after saving the given step.
WRAPPER = """
import os, sys
counter, args = sys.argv[1], sys.argv[2:]
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
crashes = {crashes!r}
if n < len(crashes):
    os.execv(sys.executable, [sys.executable, {cli!r}, "after-save", str(crashes[n]), *args])
os.execv(sys.executable, [sys.executable, "-m", "domaintune", *args])
"""


# ---------------------------------------------------------------- fast unit checks
def test_backoff_doubles_from_the_base():
    assert [backoff_delay(i, 5.0) for i in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_delay(3, 0.0) == 0.0


def test_describe_exit_and_restart_record():
    assert describe_exit(-9) == "signal SIGKILL" and describe_exit(1) == "exit code 1"
    assert describe_exit(-15, hung=True) == "hang"
    rec = restart_record(2, "signal SIGKILL", started_at=100.0, crashed_at=130.0, beat={"step": 7, "time": 125.5})
    assert rec == {"attempt": 2, "cause": "signal SIGKILL", "last_step": 7, "crashed_at": 130.0,
                   "resumed_at": None, "time_lost_s": 4.5, "recovery_s": None}
    assert restart_record(1, "hang", 100.0, 103.0, None)["time_lost_s"] == 3.0  # no step: all of it lost


def test_train_manifest_gets_only_the_restarts_that_led_to_this_process(tmp_path):
    import os

    assert restarts_of_this_run(tmp_path) == []
    records = [{"attempt": 1, "resumed_pid": 1}, {"attempt": 2, "resumed_pid": os.getpid()}]
    (tmp_path / "restarts.json").write_text(json.dumps(records))
    assert restarts_of_this_run(tmp_path) == records
    (tmp_path / "restarts.json").write_text(json.dumps(records[:1]))  # stale: an earlier series
    assert restarts_of_this_run(tmp_path) == []


def test_history_of_a_finished_stage_is_not_continued(tmp_path):
    (tmp_path / "restarts.json").write_text(json.dumps([{"attempt": 1}]))
    assert load_history(tmp_path) == [{"attempt": 1}]
    time.sleep(0.01)
    (tmp_path / "manifest.json").write_text("{}")
    assert load_history(tmp_path) == []


# ---------------------------------------------------------------- real children
def _cfg_file(tmp_path, **train):
    text = (f"name: t\nruns_dir: {tmp_path / 'runs'}\nmodel: {{base: x}}\n"
            f"data: {{sources: [{{name: a, path: {tmp_path}, stream: a}}]}}\nmix: {{mixture: {{a: 1}}, tokens: 1k}}\n")
    (tmp_path / "c.yaml").write_text(text)
    return load_config(tmp_path / "c.yaml", [f"train.{k}={v}" for k, v in train.items()])


def test_exit_code_2_is_not_retried(tmp_path):
    cfg = _cfg_file(tmp_path, max_restarts=3, restart_backoff_s=0)
    argv = [sys.executable, "-m", "domaintune", "train", str(tmp_path / "c.yaml"), "train.nonsense=1"]
    t0 = time.time()
    assert supervise(argv, cfg, cfg.run_path) == 2
    assert not (cfg.run_path / "train" / "restarts.json").exists() and time.time() - t0 < 30


def test_a_hung_child_is_killed_and_recorded(tmp_path):
    cfg = _cfg_file(tmp_path, max_restarts=1, restart_backoff_s=0, hang_timeout_s=2)
    t0 = time.time()
    code = supervise([sys.executable, "-c", "import time; time.sleep(600)"], cfg, cfg.run_path)
    assert code != 0 and time.time() - t0 < 15
    records = json.loads((cfg.run_path / "train" / "restarts.json").read_text())
    assert [r["cause"] for r in records] == ["hang", "hang"]
    assert records[0]["resumed_at"] is not None and records[1]["resumed_at"] is None  # gave up after it
    assert all(r["last_step"] is None and r["time_lost_s"] >= 2 for r in records)


# ---------------------------------------------------------------- tiny-model training
@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    return make_quickstart_workdir(tmp_path_factory.mktemp("supervise"))


def _args(work, tiny, name):
    return [str(work / "domaintune.yaml"), f"name={name}", f"model.base={tiny}", "mix.tokens=5k",
            "mix.buckets=[64,128]", "mix.heldout_tokens=0", f"train.max_steps={STEPS}", "train.batch_tokens=128",
            "train.save_every=1", "train.keep_last=2", "train.report_to=[]", "train.restart_backoff_s=0",
            "train.max_restarts=3", "runtime.threads=1"]


def _cli(args):
    res = subprocess.run([sys.executable, "-m", "domaintune", *args], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def _prepare(work, tiny, name):
    runs = work / "runs"
    if not (runs / "base" / "mix" / "manifest.json").is_file():
        _cli(["run", *_args(work, tiny, "base"), "--stages", "data,mix"])
    for stage in ("data", "mix"):
        shutil.copytree(runs / "base" / stage, runs / name / stage, dirs_exist_ok=True)
    return runs / name / "train"


def test_two_crashes_are_restarted_and_end_like_one_clean_run(workdir, tiny_model_dir, tmp_path):
    clean = _prepare(workdir, tiny_model_dir, "clean")
    _cli(["train", *_args(workdir, tiny_model_dir, "clean")])
    train_dir = _prepare(workdir, tiny_model_dir, "supervised")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(crashes=[3, 6], cli=str(CRASHING_CLI)))
    args = _args(workdir, tiny_model_dir, "supervised")
    cfg = load_config(args[0], args[1:])

    code = supervise(["train", *args], cfg, cfg.run_path,
                     launcher=[sys.executable, str(wrapper), str(tmp_path / "count")])

    assert code == 0 and (tmp_path / "count").read_text() == "3"
    records = json.loads((train_dir / "restarts.json").read_text())
    assert [(r["attempt"], r["cause"], r["last_step"]) for r in records] == [
        (1, "signal SIGKILL", 3), (2, "signal SIGKILL", 6)]
    for r in records:
        assert r["resumed_at"] >= r["crashed_at"] and r["time_lost_s"] >= 0 and r["resumed_pid"] > 0
        assert r["recovery_s"] > 0  # crash -> first step of the next attempt
    steps = [json.loads(x)["step"] for x in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    wa = load_file(clean / "model" / "adapter_model.safetensors")
    wb = load_file(train_dir / "model" / "adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_cli_supervise_reinvokes_the_same_command_without_the_flag(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import domaintune.supervise
    from domaintune.cli import app

    _cfg_file(tmp_path)
    seen = []
    monkeypatch.setattr(domaintune.supervise, "supervise", lambda argv, cfg, path: seen.append((argv, path)) or 7)
    cfg = str(tmp_path / "c.yaml")
    res = CliRunner().invoke(app, ["train", cfg, "train.lr=0.1", "--supervise", "--force"])
    assert res.exit_code == 7
    res = CliRunner().invoke(app, ["run", cfg, "seed=3", "--stages", "train,eval", "--supervise"])
    assert res.exit_code == 7
    assert [argv[3:] for argv, _ in seen] == [["train", cfg, "train.lr=0.1", "--force"],
                                              ["run", "--stages", "train,eval", cfg, "seed=3"]]
    assert seen[0][1] == tmp_path / "runs" / "t"
    res = CliRunner().invoke(app, ["train", cfg, "train.nonsense=1", "--supervise"])
    assert res.exit_code == 2 and len(seen) == 2  # a bad config fails before any child starts
