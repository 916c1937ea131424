"""Config schema and `validate` checks for the sft section."""

import pytest

from domaintune.checks import check_sft
from domaintune.config import Config
from domaintune.errors import ConfigError


def _cfg(tmp_path, tiny_model_dir, export=None, **sft):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    raw = {"name": "t", "model": {"base": str(tiny_model_dir)}, "sft": {"data": [{"path": str(data)}], **sft}}
    if export is not None:
        raw["export"] = export
    return Config.model_validate(raw)


def test_sft_switches_the_stage_on_and_is_the_final_model(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir)
    assert cfg.model_stages() == ["sft"] and cfg.final_model_stage == "sft"
    assert cfg.previous_model_stage("sft") is None
    assert check_sft(cfg) == []


def test_missing_files_and_templates_are_reported(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir, template="chatm")
    cfg.sft.data[0].path = str(tmp_path / "gone.jsonl")
    problems = check_sft(cfg)
    assert any("sft.data[0].path: file not found" in p for p in problems)
    assert any("did you mean 'chatml'" in p for p in problems)


def test_prefix_needs_an_adapter_export(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir, method="prefix")
    assert cfg.sft.packed is False  # packing defaults off for prefix tuning
    assert any("export.merge" in p for p in check_sft(cfg))
    assert check_sft(_cfg(tmp_path, tiny_model_dir, method="prefix", export={"merge": False})) == []


@pytest.mark.parametrize(("sft", "message"), [
    ({"method": "auto"}, "auto.target"),
    ({"method": "auto", "auto": {"target": 1.0}, "val_fraction": 0}, "val_fraction > 0"),
    ({"max_restarts": 2}, "set runtime.supervise.max_restarts"),
    ({"method": "prefix", "packing": True}, "packing: false"),
])
def test_schema_rejects_inconsistent_sft_settings(tmp_path, tiny_model_dir, sft, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, tiny_model_dir, **sft)


def test_unknown_sft_key_gets_a_suggestion(tmp_path, tiny_model_dir):
    from domaintune.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\nmodel: {{base: {tiny_model_dir}}}\nsft:\n  data: [{{path: a.jsonl}}]\n"
                    "  max_lenght: 10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean 'max_len'"):
        load_config(path)
