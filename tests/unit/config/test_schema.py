"""Composed sections, paths resolved through the validation context, what decides a result, and
the late failures `validate` now catches."""

import types
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from domaintune import checks
from domaintune.artifacts import RunDir
from domaintune.config import Config, ConfigWarning, SFTConfig, TrainConfig, load_config, volatile_keys
from domaintune.errors import ConfigError
from domaintune.pipeline import fingerprint_details

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
BASE = "name: t\nmodel: {base: org/model}\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_sft_has_only_the_keys_it_implements():
    assert "max_restarts" not in SFTConfig.model_fields and "hang_timeout_s" not in SFTConfig.model_fields
    # kept for SFT (spike rollback and auto-eval are SFT features too)
    assert {"auto_eval", "guards"} <= set(SFTConfig.model_fields)
    assert {"spike_policy", "max_rollbacks"} <= set(SFTConfig.model_fields["guards"].annotation.model_fields)
    assert SFTConfig.model_validate({"data": [{"path": "a.jsonl"}]}).batch.epochs == 3  # SFT's own default
    assert TrainConfig().batch.epochs == 1


def test_volatile_keys_follow_from_the_schema():
    keys = volatile_keys(Config)
    assert {"train.logging", "train.checkpoint.keep_last", "train.checkpoint.resume", "sft.logging",
            "align.checkpoint.allow_config_change", "runtime"} <= set(keys)
    assert "train.checkpoint.save_every" in keys and "train.guards.spike_factor" not in keys
    cfg = Config.model_validate({"name": "t", "model": {"base": "a/b"}})
    assert "logging" not in cfg.result_section("train") and "resume" not in cfg.result_section("train")["checkpoint"]
    assert "save_every" not in cfg.result_section("train")["checkpoint"]
    assert cfg.result_section("runtime") is None
    # under spike rollback the checkpoint interval decides which batches are skipped: it counts then
    rollback = Config.model_validate({"name": "t", "model": {"base": "a/b"}, "train": {
        "guards": {"spike_policy": "rollback", "spike_factor": 3}, "checkpoint": {"save_every": 2}}})
    assert rollback.result_section("train")["checkpoint"] == {"save_every": 2}


def test_editing_train_does_not_change_the_align_fingerprint(tmp_path):
    """Bug: align's fingerprint hashed all of `train`, so editing train.lr re-ran align (examples/dpo)."""
    from domaintune.cli import STAGES

    spec = next(s for s in STAGES if s.name == "align")
    module = types.SimpleNamespace()  # settings only: no inputs, no code

    def config_of(*overrides):
        cfg = load_config(EXAMPLES / "dpo" / "domaintune.yaml", list(overrides))
        return fingerprint_details(spec, cfg, RunDir(tmp_path), module)["config"]

    plain = config_of()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # train without mix: warned, and ignored here
        assert config_of("train.optim.lr=0.5", "train.optim.scheduler=linear") == plain
    assert config_of("align.dpo.lr=0.5") != plain
    assert config_of("align.checkpoint.keep_last=9", "runtime.supervise.max_restarts=1") == plain


def test_paths_resolve_against_the_config_folder_through_the_context(tmp_path):
    (tmp_path / "m").mkdir()
    text = (BASE.replace("org/model", "m") + "sft: {data: [{path: qa.jsonl}], template: t.jinja}\n"
            "eval: {tasks: [{task: mmlu, data: d}, {task: tasks/x.yaml}]}\n")
    cfg = load_config(write(tmp_path, text))
    root = tmp_path.resolve()
    assert cfg.model.base == str(root / "m") and cfg.sft.data[0].path == str(root / "qa.jsonl")
    assert cfg.sft.template == str(root / "t.jinja") and cfg.run_path == root / "runs" / "t"
    assert cfg.eval.tasks[0].task == "mmlu" and cfg.eval.tasks[0].data == str(root / "d")
    assert cfg.eval.tasks[1].task == str(root / "tasks" / "x.yaml")
    assert cfg.section("sft")["data"][0]["path"] == "qa.jsonl"  # dumped relative: a moved project hashes alike
    hub = Config.model_validate({"name": "t", "model": {"base": "m"}, "sft": {"data": [{"path": "qa.jsonl"}]}})
    assert hub.model.base == "m" and hub.sft.data[0].path == "qa.jsonl"  # no file: nothing to resolve against


def test_schema_rules_live_in_the_sections(tmp_path):
    with pytest.raises(ConfigError, match=r"eval: stride \(600\) must be <= window \(512\)"):
        load_config(write(tmp_path, BASE + "eval: {window: 512, stride: 600}\n"))
    with pytest.raises(ConfigError, match=r"sft.guards.spike_policy: 'rollback' needs guards.spike_factor"):
        load_config(write(tmp_path, BASE + "sft: {data: [{path: a}], guards: {spike_policy: rollback}}\n"))
    with pytest.raises(ConfigError, match="model.new_tokens: an adapter cannot train the new embedding rows"):
        load_config(write(tmp_path, BASE.replace("}", ", new_tokens: [X]}")))
    with pytest.raises(ConfigError, match="export.merge: false only makes sense with an adapter"):
        load_config(write(tmp_path, BASE + "train: {method: full}\nexport: {merge: false}\n"))
    with pytest.raises(ConfigError, match="activation_checkpointing: not available with prefix tuning"):
        load_config(write(tmp_path, BASE + "sft: {data: [{path: a}], method: prefix, "
                                           "activation_checkpointing: true}\n"))


def test_unknown_codec_fails_at_validation(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"data.sources.0.encoding: unknown encoding 'utf8x'"):
        load_config(write(tmp_path, BASE + "data: {sources: [{path: d, stream: s, encoding: utf8x}]}\n"))
    cfg = load_config(write(tmp_path, BASE + "data: {sources: [{path: d, stream: s, encoding: GB18030}]}\n"))
    assert cfg.data.sources[0].encoding == "GB18030"


def test_unimportable_scorer_is_a_validate_problem():
    assert "cannot import 'no_such_pkg.mod:score'" in checks.check_scorer("no_such_pkg.mod:score")[0]
    assert "data.quality.scorer" in checks.check_scorer("os.path:missing_attr")[0]
    assert checks.check_scorer("os.path:basename") == []


def test_train_settings_without_mix_warn(tmp_path):
    with pytest.warns(ConfigWarning, match="train: settings without a mix section do nothing"):
        load_config(write(tmp_path, BASE + "train: {optim: {lr: 0.1}}\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        load_config(write(tmp_path, BASE))


def test_default_gate_streams_matching_no_stream_warn(tmp_path):
    (tmp_path / "d").mkdir()
    text = BASE + "data: {sources: [{path: d, stream: finance}]}\nmix: {mixture: {finance: 1}, tokens: 2k}\n"
    with pytest.warns(ConfigWarning, match=r"eval.gate.domain_streams: the default \['domain'\] names no data stream"):
        load_config(write(tmp_path, text))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        load_config(write(tmp_path, text + "eval: {gate: {domain_streams: [finance]}}\n"))


def test_supervisor_settings_are_one_runtime_block():
    with pytest.raises(ValidationError, match="set runtime.supervise.hang_timeout_s"):
        SFTConfig.model_validate({"data": [{"path": "a"}], "hang_timeout_s": 5})
    cfg = Config.model_validate({"name": "t", "model": {"base": "a/b"}, "runtime": {"supervise": {"max_restarts": 1}}})
    assert cfg.runtime.supervise.max_restarts == 1
