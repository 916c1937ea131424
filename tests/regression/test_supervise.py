"""--supervise: a crashed training child is restarted and resumes exactly; user errors are not
retried; a hung child (no heartbeat) is killed and recorded as a hang."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from domaintune.artifacts import RunDir
from domaintune.config import load_config
from domaintune.supervise import backoff_delay, describe_exit, restart_record, supervise
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

    log = RunDir(tmp_path).restarts("train")
    assert log.for_manifest() == {"restarts": [], "restart_series": None}
    records = [{"attempt": 1, "resumed_pid": 1}, {"attempt": 2, "resumed_pid": os.getpid()}]
    log.write("s1", records)
    assert log.for_manifest() == {"restarts": records, "restart_series": "s1"}
    log.write("s1", records[:1])  # stale: an earlier series
    assert log.for_manifest() == {"restarts": [], "restart_series": "s1"}


def test_history_of_a_finished_stage_is_not_continued(tmp_path):
    """The stage names the series it finished in its manifest: no file times are compared."""
    run_dir = RunDir(tmp_path)
    log = run_dir.restarts("train")
    log.write("s1", [{"attempt": 1}])
    assert log.open_series() == ("s1", [{"attempt": 1}])
    run_dir.write_manifest("train", {"metrics": {"restart_series": "s0"}})  # finished an older series
    assert log.open_series() == ("s1", [{"attempt": 1}])
    run_dir.write_manifest("train", {"metrics": log.for_manifest()})
    assert log.open_series() == (None, [])


# ---------------------------------------------------------------- real children
def _cfg_file(tmp_path, **train):
    text = (f"name: t\nruns_dir: {tmp_path / 'runs'}\nmodel: {{base: x}}\n"
            f"data: {{sources: [{{name: a, path: {tmp_path}, stream: a}}]}}\nmix: {{mixture: {{a: 1}}, tokens: 1k}}\n")
    (tmp_path / "c.yaml").write_text(text)
    return load_config(tmp_path / "c.yaml", [f"runtime.supervise.{k}={v}" for k, v in train.items()])


def test_exit_code_2_is_not_retried(tmp_path):
    cfg = _cfg_file(tmp_path, max_restarts=3, restart_backoff_s=0)
    argv = [sys.executable, "-m", "domaintune", "train", str(tmp_path / "c.yaml"), "train.nonsense=1"]
    assert supervise(argv, cfg, cfg.run_path) == 2
    assert not (cfg.run_path / "train" / "restarts.json").exists()


def test_a_hung_child_is_killed_and_recorded(tmp_path):
    cfg = _cfg_file(tmp_path, max_restarts=1, restart_backoff_s=0, hang_timeout_s=2)
    code = supervise([sys.executable, "-c", "import time; time.sleep(600)"], cfg, cfg.run_path)
    assert code != 0
    records = RunDir(cfg.run_path).restarts("train").read()[1]
    assert [r["cause"] for r in records] == ["hang", "hang"]
    assert records[0]["resumed_at"] is not None and records[1]["resumed_at"] is None  # gave up after it
    assert all(r["last_step"] is None and r["time_lost_s"] >= 2 for r in records)


# A child that beats as a training stage does (the stage's own heartbeat file), then crashes or
# succeeds; the second run also records what the stage's manifest would list.
BEATING_CHILD = """
import json, os, sys, time
from domaintune.artifacts import RunDir
from domaintune.training.heartbeat import Heartbeat
run, stage, phase, counter, steps, pause = sys.argv[1:7]
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
beat = Heartbeat(RunDir(run).heartbeat_path(stage), stage, phase)
for step in range(1, int(steps) + 1):
    time.sleep(float(pause))
    beat.beat(step)
if n == 0:
    sys.exit(1)
json.dump(RunDir(run).restarts(stage).for_manifest(), open(counter + ".manifest", "w"))
"""


def _sft_cfg(tmp_path, **train):
    text = (f"name: t\nruns_dir: {tmp_path / 'runs'}\nmodel: {{base: x}}\n"
            f"sft: {{data: [{{path: {tmp_path / 'qa.jsonl'}}}], method: auto, auto: {{target: 1.0}}}}\n")
    (tmp_path / "c.yaml").write_text(text)
    return load_config(tmp_path / "c.yaml", [f"runtime.supervise.{k}={v}" for k, v in train.items()])


def _beating(tmp_path, cfg, phase, steps, pause):
    child = tmp_path / "child.py"
    child.write_text(BEATING_CHILD)
    return [sys.executable, str(child), str(cfg.run_path), "sft", phase, str(tmp_path / "count"), str(steps),
            str(pause)]


def test_sft_restarts_are_recorded_for_sft_and_reach_its_manifest(tmp_path):
    """Bug: the supervisor wrote every restart to train/restarts.json (a stray train/ folder in an
    SFT-only run) while the SFT manifest read sft/restarts.json."""
    cfg = _sft_cfg(tmp_path, max_restarts=2, restart_backoff_s=0)
    # Steps last longer than the supervisor's poll (1 s), as real ones do: it sees the resumed step
    # and records the recovery time before the stage writes its manifest.
    assert supervise(_beating(tmp_path, cfg, "lora", steps=2, pause=2.0), cfg, cfg.run_path) == 0
    series, records = RunDir(cfg.run_path).restarts("sft").read()
    assert [(r["attempt"], r["cause"], r["last_step"]) for r in records] == [(1, "exit code 1", 2)]
    assert series and records[0]["recovery_s"] is not None
    manifest = json.loads((tmp_path / "count.manifest").read_text())
    assert manifest == {"restarts": records, "restart_series": series}
    assert not (cfg.run_path / "train").exists()


def test_a_healthy_sft_auto_attempt_is_not_killed_as_hung(tmp_path):
    """Bug: the watchdog looked for heartbeats two folders deep; SFT-auto attempts beat three deep."""
    cfg = _sft_cfg(tmp_path, max_restarts=0, hang_timeout_s=2)
    (tmp_path / "count").write_text("1")  # the child's second run: succeeds after beating for ~6 s
    assert supervise(_beating(tmp_path, cfg, "lora", steps=12, pause=0.5), cfg, cfg.run_path) == 0
    assert RunDir(cfg.run_path).restarts("sft").read() == (None, [])


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
    records = RunDir(cfg.run_path).restarts("train").read()[1]
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


SFT_WRAPPER = """
import os, sys
counter, args = sys.argv[1], sys.argv[2:]
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
mode = ["after-save", "3"] if n == 0 else ["slow", "3000"]  # crash once, then train slowly
os.execv(sys.executable, [sys.executable, {cli!r}, *mode, *args])
"""


@pytest.mark.slow
def test_supervised_sft_auto_survives_a_crash_and_a_hang_timeout(tmp_path, tiny_model_dir):
    """End to end: `sft.method: auto` under --supervise with a hang timeout shorter than the run.
    The crash in the lora attempt is recorded for SFT and the run is never killed as hung."""
    qa = [{"instruction": f"What is fee {i}?", "input": "", "output": f"Fee {i} is {i * 5} dollars."}
          for i in range(12)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    (tmp_path / "c.yaml").write_text(
        f"name: sup\nruns_dir: {tmp_path / 'runs'}\nmodel: {{base: {tiny_model_dir}}}\nruntime: {{threads: 1}}\n"
        f"sft: {{data: [{{path: {tmp_path / 'qa.jsonl'}}}], method: auto, auto: {{target: 1.0e-6}}, max_len: 64,\n"
        f"      batch_size: 4, max_steps: 8, save_every: 1, report_to: [], val_fraction: 0.2}}\n"
        f"train: {{max_restarts: 2, restart_backoff_s: 0, hang_timeout_s: 60}}\n")
    cfg = load_config(tmp_path / "c.yaml")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(SFT_WRAPPER.format(cli=str(CRASHING_CLI)))
    code = supervise(["sft", str(tmp_path / "c.yaml")], cfg, cfg.run_path,
                     launcher=[sys.executable, str(wrapper), str(tmp_path / "count")])
    assert code == 0 and (tmp_path / "count").read_text() == "2"  # one crash, no hang kill
    sft = json.loads((cfg.run_path / "sft" / "manifest.json").read_text())["metrics"]
    assert [(r["attempt"], r["cause"], r["last_step"]) for r in sft["restarts"]] == [(1, "signal SIGKILL", 3)]
    assert [a["method"] for a in sft["attempts"] if a["status"] != "skipped"] == ["lora", "full"]
    assert not (cfg.run_path / "train").exists()
