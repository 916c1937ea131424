"""Metric backends: TensorBoard for real; wandb and mlflow through fake modules (not installed)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from domaintune import trackers as tr
from domaintune.errors import ConfigError

STEPS = [
    {"step": 1, "train/loss": 2.5, "train/loss/domain": 3.0, "lr": 1e-4, "note": "warmup",
     "skipped": None, "clipped": True, "tokens": 128},
    {"step": 2, "train/loss": 2.0, "train/loss/domain": 2.25, "lr": 2e-4, "clipped": False,
     "tokens": 130},
    {"step": 3, "train/loss": 1.5, "lr": 3e-4, "tokens": 131},
]
CONFIG = {"name": "demo", "train": {"lr": 1e-4, "report_to": ["tensorboard"], "long": "x" * 900},
          "data": {"path": Path("/tmp/data.jsonl")}}


def test_numeric_metrics_keeps_numbers_and_turns_bools_into_ints():
    assert tr.numeric_metrics(STEPS[0]) == {"train/loss": 2.5, "train/loss/domain": 3.0,
                                            "lr": 1e-4, "clipped": 1, "tokens": 128}
    assert isinstance(tr.numeric_metrics({"ok": True})["ok"], int)


# ---------------------------------------------------------------------------------- TensorBoard

def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = tr.TensorBoardTracker(tmp_path / "tb")
    tracker.log_config(CONFIG)
    for rec in STEPS:
        tracker.log(rec, step=rec["step"])
    tracker.close()

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/loss/domain", "clipped"} <= set(tags["scalars"])
    assert "note" not in tags["scalars"] and "skipped" not in tags["scalars"]
    assert "step" not in tags["scalars"]
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(1, 2.5), (2, 2.0), (3, 1.5)]
    domain = [(e.step, e.value) for e in acc.Scalars("train/loss/domain")]
    assert domain == [(1, 3.0), (2, 2.25)]
    assert [e.value for e in acc.Scalars("clipped")] == [1.0, 0.0]
    assert any(t.startswith("config") for t in tags["tensors"])  # the text summary


# ---------------------------------------------------------------------------------- wandb

class FakeWandbRun:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.logged: list[tuple[dict, int]] = []
        self.finished = 0
        self.config = types.SimpleNamespace(updates=[])
        self.config.update = lambda d, allow_val_change=False: self.config.updates.append(d)

    def log(self, metrics, step=None):
        self.logged.append((dict(metrics), step))

    def finish(self):
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        run = FakeWandbRun(**kwargs)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_logs_numeric_metrics_with_steps_and_finishes(fake_wandb, tmp_path):
    tracker = tr.WandbTracker("proj", "run-1", tmp_path / "stage")
    tracker.log_config(CONFIG)
    for rec in STEPS:
        tracker.log(rec, step=rec["step"])
    tracker.close()

    (run,) = fake_wandb.runs
    assert run.init_kwargs["project"] == "proj" and run.init_kwargs["name"] == "run-1"
    assert run.init_kwargs["dir"] == str(tmp_path / "stage")
    assert [step for _, step in run.logged] == [1, 2, 3]
    assert run.logged[0][0] == {"train/loss": 2.5, "train/loss/domain": 3.0, "lr": 1e-4,
                                "clipped": 1, "tokens": 128}
    assert run.config.updates[0]["data"]["path"] == "/tmp/data.jsonl"  # made JSON-safe
    assert run.finished == 1


# ---------------------------------------------------------------------------------- mlflow

@pytest.fixture
def fake_mlflow(monkeypatch):
    module = types.ModuleType("mlflow")
    module.calls = []

    def recorder(name):
        def call(*args, **kwargs):
            module.calls.append((name, args, kwargs))
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))
        return call

    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_metrics", "log_params",
                 "end_run"):
        setattr(module, name, recorder(name))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return module


def _calls(module, name):
    return [(args, kwargs) for n, args, kwargs in module.calls if n == name]


def test_mlflow_uses_local_store_sanitizes_keys_and_ends_run(fake_mlflow, tmp_path):
    tracker = tr.MlflowTracker("run-1", tmp_path)
    tracker.log_config(CONFIG)
    tracker.log({"train/loss": 2.5, "train/loss/法律": 3.0, "eval/acc@5": 0.5, "bad//key/": 1,
                 "note": "x"}, step=7)
    tracker.log({"train/loss": 2.0}, step=8)
    tracker.close()
    tracker.close()  # idempotent

    (uri_args, _), = _calls(fake_mlflow, "set_tracking_uri")
    assert uri_args[0] == (tmp_path / "mlruns").resolve().as_uri()
    assert _calls(fake_mlflow, "start_run") == [((), {"run_name": "run-1"})]
    first, second = _calls(fake_mlflow, "log_metrics")
    sanitized = {"train/loss": 2.5, "train/loss/法律": 3.0, "eval/acc_5": 0.5, "bad/key": 1}
    assert first == ((sanitized,), {"step": 7})
    assert second == (({"train/loss": 2.0},), {"step": 8})
    (params_args, _), = _calls(fake_mlflow, "log_params")
    params = params_args[0]
    assert params["train.lr"] == "0.0001" and params["name"] == "demo"
    assert params["train.report_to"] == '["tensorboard"]'
    assert len(params["train.long"]) == 500
    assert len(_calls(fake_mlflow, "end_run")) == 1
    assert fake_mlflow.calls[-1][0] == "end_run"


def test_mlflow_explicit_tracking_uri_wins(fake_mlflow, tmp_path):
    tr.MlflowTracker("r", tmp_path, tracking_uri="http://127.0.0.1:5000", experiment="exp")
    assert _calls(fake_mlflow, "set_tracking_uri") == [(("http://127.0.0.1:5000",), {})]
    assert _calls(fake_mlflow, "set_experiment") == [(("exp",), {})]


@pytest.mark.parametrize("key, expected", [
    ("train/loss/domain", "train/loss/domain"), ("/a//b/", "a/b"), ("a/./b", "a/b"),
    ("a/../b", "a/__/b"), ("x:y=z", "x_y_z"), ("", "_"), ("k" * 300, "k" * 250),
])
def test_mlflow_key(key, expected):
    assert tr.mlflow_key(key) == expected


# ---------------------------------------------------------------------------------- building

def test_build_trackers_maps_names_to_backends(fake_wandb, fake_mlflow, tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(tr, "TensorBoardTracker", lambda log_dir: made.append(log_dir) or "tb")
    out = tr.build_trackers(["tensorboard", "wandb", "mlflow", "wandb"], tmp_path, "run-1",
                            project="p")
    assert out[0] == "tb" and made == [tmp_path / "tensorboard"]
    assert isinstance(out[1], tr.WandbTracker) and isinstance(out[2], tr.MlflowTracker)
    assert len(out) == 3
    assert fake_wandb.runs[0].init_kwargs["project"] == "p"
    assert _calls(fake_mlflow, "set_experiment") == [(("p",), {})]
    assert tr.build_trackers([], tmp_path, "run-1") == []


def test_missing_package_raises_config_error_with_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import of wandb now fails
    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a))
    with pytest.raises(ConfigError) as err:
        tr.build_trackers(["wandb", "mlflow"], tmp_path, "run-1")
    problems = err.value.problems
    assert len(problems) == 2
    assert all("train.logging.report_to" in p for p in problems)
    assert "pip install 'domaintune[wandb]'" in problems[0] and "pip install 'domaintune[mlflow]'" in problems[1]
    assert not any(tmp_path.iterdir())  # nothing started


def test_unknown_backend_is_a_config_error_with_suggestion(tmp_path):
    with pytest.raises(ConfigError) as err:
        tr.build_trackers(["tensorbord"], tmp_path, "run-1")
    (problem,) = err.value.problems
    assert "train.logging.report_to" in problem and "'tensorboard'" in problem
    with pytest.raises(ConfigError, match=r"sft\.logging\.report_to: unknown backend"):  # the section in use
        tr.build_trackers(["tensorbord"], tmp_path, "run-1", key="sft.logging.report_to")


def test_missing_packages_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    problems = tr.missing_packages(["wandb", "mlflow"])
    assert len(problems) == 2 and "mlflow" not in sys.modules


def test_failed_backend_start_closes_the_ones_already_started(fake_mlflow, monkeypatch, tmp_path):
    closed = []

    class Fine:
        def close(self):
            closed.append(True)

    def boom(*a, **k):
        raise RuntimeError("no API key")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=boom))
    monkeypatch.setattr(tr, "TensorBoardTracker", lambda log_dir: Fine())
    with pytest.raises(RuntimeError, match="no API key"):
        tr.build_trackers(["tensorboard", "wandb"], tmp_path, "r")
    assert closed == [True]


# ---------------------------------------------------------------------------------- fan-out

class Recorder:
    name = "recorder"

    def __init__(self, fail_on_log=False):
        self.fail_on_log = fail_on_log
        self.logged, self.configs, self.closed = [], [], 0

    def log(self, metrics, step):
        if self.fail_on_log:
            raise ConnectionError("server [gone]")
        self.logged.append((metrics, step))

    def log_config(self, config):
        self.configs.append(config)

    def close(self):
        self.closed += 1


def test_group_disables_failing_tracker_after_one_warning(capsys):
    good, bad = Recorder(), Recorder(fail_on_log=True)
    assert isinstance(good, tr.Tracker)
    with tr.TrackerGroup([bad, good]) as group:
        group.log_config({"a": 1})
        for step in (1, 2, 3):
            group.log({"train/loss": 1.0 / step}, step)
        assert group.active == [good]
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.count("warning") == 1
    assert "recorder" in out and "at step 1" in out and "server [gone]" in out
    assert [s for _, s in good.logged] == [1, 2, 3]
    assert bad.configs == [{"a": 1}] and bad.logged == []
    assert bad.closed == 1 and good.closed == 1  # failing one released once, not again at exit


def test_group_close_continues_past_a_failing_close(capsys):
    class BadClose(Recorder):
        def close(self):
            raise OSError("disk full")

    good = Recorder()
    group = tr.TrackerGroup([BadClose(), good])
    group.close()
    group.close()
    assert good.closed == 1
    assert capsys.readouterr().out.count("disk full") == 1
