"""The `synth` section: defaults, cross-field rules and the stage table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domaintune.config import Config, SynthConfig
from domaintune.config.synth import TeacherConfig


def _cfg(**extra) -> Config:
    raw = {"name": "r", "model": {"base": "some/model"},
           "data": {"sources": [{"name": "d", "path": "docs", "stream": "domain"}]}, **extra}
    return Config.model_validate(raw)


def test_defaults_and_stage_switch():
    cfg = _cfg(synth={}, sft={"data": []})
    assert cfg.synth.methods == ["doc_qa"] and cfg.synth.teacher.batch_size == 16
    assert cfg.stage_enabled("synth") and not _cfg().stage_enabled("synth")


def test_sft_without_files_needs_a_synth_section():
    with pytest.raises(ValidationError, match="add a synth section"):
        _cfg(sft={"data": []})


def test_doc_qa_needs_the_data_stage():
    with pytest.raises(ValidationError, match="add a data section"):
        Config.model_validate({"name": "r", "model": {"base": "m"}, "synth": {}})


@pytest.mark.parametrize(("raw", "message"), [
    ({"teacher": {"kind": "openai"}}, "needs teacher.url"),
    ({"teacher": {"url": "http://127.0.0.1:8000/v1"}}, "only used with teacher.kind: openai"),
    ({"methods": ["self_instruct"]}, "synth.self_instruct.seeds"),
    ({"methods": ["magpie"], "teacher": {"kind": "openai", "url": "http://x/v1", "model": "m",
                                         "completions": False}}, "chat-only endpoint"),
    ({"methods": ["rewrite"]}, "doc_qa"),
])
def test_bad_settings_are_named(raw, message):
    with pytest.raises(ValidationError, match=message):
        SynthConfig.model_validate(raw)


def test_openai_teacher_ok():
    t = TeacherConfig(kind="openai", url="http://127.0.0.1:8000/v1", model="demo")
    assert t.max_retries == 3 and t.completions
