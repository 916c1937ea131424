"""The stage runner: skip when unchanged, re-run downstream on change, atomic manifests."""

import json
import sys
import types

import pytest

from domaintune.artifacts import RunDir, StageResult, atomic_write_json
from domaintune.config import load_config
from domaintune.errors import StageError
from domaintune.pipeline import StageSpec, run_pipeline

CALLS: list[str] = []


@pytest.fixture()
def fake_stage(monkeypatch):
    """StageSpec factory; each spec's module is a fake registered in sys.modules for this test only."""
    def make(name: str, upstream: str | None) -> StageSpec:
        mod = types.ModuleType(f"fake_{name}")

        def run(cfg, run_dir):
            CALLS.append(name)
            out = run_dir.stage_dir(name) / "out.txt"
            prev = (run_dir.root / upstream / "out.txt").read_text() if upstream else ""
            out.write_text(prev + f"{name}:{cfg.train.optim.lr};")
            return StageResult(outputs={"out": "out.txt"}, metrics={"n": 1}, summary=name)

        mod.run = run
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        return StageSpec(name, mod.__name__, (name if name in ("data", "train") else "eval",),
                         (upstream,) if upstream else ())

    return make


@pytest.fixture()
def specs(fake_stage):
    CALLS.clear()
    return [fake_stage("data", None), fake_stage("train", "data"), fake_stage("eval", "train")]


@pytest.fixture()
def cfg_path(tmp_path):
    (tmp_path / "docs").mkdir()
    p = tmp_path / "cfg.yaml"
    p.write_text("name: t\nmodel: {base: org/m}\ndata: {sources: [{path: docs, stream: s}]}\n"
                 "mix: {mixture: {s: 1}, tokens: 1000}\n")
    return p


def test_second_run_skips_everything(specs, cfg_path):
    cfg = load_config(cfg_path)
    assert [o.status for o in run_pipeline(cfg, specs)] == ["ran"] * 3
    assert [o.status for o in run_pipeline(cfg, specs)] == ["skipped"] * 3
    assert CALLS == ["data", "train", "eval"]
    m = RunDir(cfg.run_path).manifest("train")
    for key in ("fingerprint", "config", "config_hash", "inputs", "versions", "git_sha", "metrics",
                "wall_time_s", "outputs"):
        assert key in m


def test_changed_setting_reruns_that_stage_and_downstream(specs, cfg_path):
    run_pipeline(load_config(cfg_path), specs)
    CALLS.clear()
    outcomes = run_pipeline(load_config(cfg_path, ["train.lr=0.5"]), specs)
    assert [o.status for o in outcomes] == ["skipped", "ran", "ran"]
    assert CALLS == ["train", "eval"]


def test_force_and_stage_selection(specs, cfg_path):
    cfg = load_config(cfg_path)
    run_pipeline(cfg, specs)
    CALLS.clear()
    assert [o.status for o in run_pipeline(cfg, specs, ["train"], force=True)] == ["ran"]
    with pytest.raises(StageError, match="unknown stage 'trian' \\(did you mean 'train'"):
        run_pipeline(cfg, specs, ["trian"])


def test_missing_upstream_is_a_clear_error(specs, cfg_path):
    with pytest.raises(StageError, match="needs the outputs of stage 'data'.*--stages data"):
        run_pipeline(load_config(cfg_path), specs, ["train"])


def test_deleted_output_forces_rerun(specs, cfg_path):
    cfg = load_config(cfg_path)
    run_pipeline(cfg, specs)
    (cfg.run_path / "eval" / "out.txt").unlink()
    assert [o.status for o in run_pipeline(cfg, specs)] == ["skipped", "skipped", "ran"]


def test_crashed_stage_leaves_no_manifest(specs, cfg_path, monkeypatch):
    cfg = load_config(cfg_path)
    run_pipeline(cfg, specs)

    def boom(cfg, run_dir):
        raise RuntimeError("killed mid-stage")

    monkeypatch.setattr(sys.modules["fake_train"], "run", boom)
    with pytest.raises(RuntimeError):
        run_pipeline(cfg, specs, force=True)
    # the old manifest was invalidated before the stage started: a partial re-run never looks done
    assert RunDir(cfg.run_path).manifest("train") is None


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"v": 1})

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def _model_specs(fake_stage):
    CALLS.clear()
    from domaintune.pipeline import MODEL

    def stage(name, upstream, when=None):
        spec = fake_stage(name, None)
        return StageSpec(spec.name, spec.target, spec.sections, upstream, when=when)

    return [stage("data", ()), stage("train", ("data",), lambda c: c.mix is not None),
            stage("eval", ("data", MODEL), lambda c: c.final_model_stage is not None)]


def test_switched_off_stage_is_skipped_and_dropped_from_downstream(tmp_path, fake_stage):
    (tmp_path / "docs").mkdir()
    p = tmp_path / "cfg.yaml"
    p.write_text("name: t\nmodel: {base: org/m}\ndata: {sources: [{path: docs, stream: s}]}\n")
    cfg = load_config(p)
    outcomes = run_pipeline(cfg, _model_specs(fake_stage))
    assert [o.status for o in outcomes] == ["ran", "off", "off"]  # no model stage: nothing to evaluate
    with pytest.raises(StageError, match="switched off"):
        run_pipeline(cfg, _model_specs(fake_stage), ["train"])


def test_model_upstream_follows_the_last_model_stage(cfg_path, fake_stage):
    cfg = load_config(cfg_path)
    assert cfg.model_stages() == ["train"] and cfg.final_model_stage == "train"
    assert cfg.previous_model_stage("train") is None  # CPT starts from the base model
    assert cfg.previous_model_stage("eval") == "train"
    run_pipeline(cfg, _model_specs(fake_stage))
    assert RunDir(cfg.run_path).manifest("eval")["upstream"].keys() == {"data", "train"}


def test_volatile_keys_do_not_rerun_a_stage(cfg_path, fake_stage):
    spec = fake_stage("train", None)
    run_pipeline(load_config(cfg_path), [spec])
    volatile = ["runtime.supervise.max_restarts=9", "train.logging.log_every=1", "train.checkpoint.keep_last=5"]
    assert [o.status for o in run_pipeline(load_config(cfg_path, volatile), [spec])] == ["skipped"]
    assert [o.status for o in run_pipeline(load_config(cfg_path, ["train.lr=0.5"]), [spec])] == ["ran"]
