"""The align section: paths, defaults, stage order and the checks `validate` adds."""

from pathlib import Path

import pytest

from domaintune.config import load_config
from domaintune.errors import ConfigError

ALIGN_ONLY = """
name: t
model: {base: org/model}
align:
  data: {general: [g.jsonl], domain: [pairs/d.jsonl]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_align_paths_resolve_against_the_config_folder_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ALIGN_ONLY))
    assert cfg.align.data.domain == [str((tmp_path / "pairs" / "d.jsonl").resolve())]
    assert cfg.align.method == "lora" and cfg.align.filter.method == "mc_dropout" and cfg.align.dpo.beta == 0.1
    assert cfg.model_stages() == ["align"] and cfg.previous_model_stage("align") is None


def test_align_follows_train_when_both_are_on(tmp_path):
    text = ALIGN_ONLY + "data: {sources: [{path: docs, stream: domain}]}\nmix: {mixture: {domain: 1}, tokens: 20k}\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.previous_model_stage("align") == "train" and cfg.final_model_stage == "align"


def test_unknown_align_keys_are_errors_with_suggestions(tmp_path):
    text = ALIGN_ONLY + "  dpo: {betta: 0.2}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    joined = "\n".join(err.value.problems)
    assert "align.dpo.betta: unknown key (did you mean 'beta'?)" in joined


def test_filter_needs_the_reward_model(tmp_path):
    with pytest.raises(ConfigError, match="filter.enabled needs reward.enabled"):
        load_config(write(tmp_path, ALIGN_ONLY + "  reward: {enabled: false}\n"))
    cfg = load_config(write(tmp_path, ALIGN_ONLY + "  reward: {enabled: false}\n  filter: {enabled: false}\n"))
    assert not cfg.align.reward.enabled


def test_validate_flags_missing_pair_files_and_qlora_without_gpu(tmp_path, monkeypatch):
    from domaintune import checks

    monkeypatch.setattr(checks, "_cuda", lambda: False)
    cfg = load_config(write(tmp_path, ALIGN_ONLY + "  method: qlora\n"))
    problems = checks.check_align(cfg)
    assert any(p.startswith("align.data.general[0]: file not found") for p in problems)
    assert any(p.startswith("align.data.domain[0]: file not found") for p in problems)
    assert any("align.method: 'qlora'" in p and "CUDA GPU" in p for p in problems)
