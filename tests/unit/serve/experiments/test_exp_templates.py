"""Prompt templates: the shipped library, versions, selection, and the Jinja sandbox."""

from __future__ import annotations

import pytest

from domaintune.errors import ConfigError
from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal, Prompt
from domaintune.serve.templates import TemplateRegistry

USER = Principal(id="u1")
BASE = "name: {name}\nversion: {version}\nrole: {role}\n"


def _write(folder, file, **fields):
    text = BASE.format(name=fields.pop("name", "t"), version=fields.pop("version", 1), role=fields.pop("role", "R"))
    text += "".join(f"{k}: {v}\n" for k, v in fields.items())
    (folder / file).write_text(text, encoding="utf-8")
    return folder


def test_the_shipped_library_has_each_template_in_english_and_chinese():
    described = TemplateRegistry().describe()
    by_name = {d["name"]: d for d in described}
    for base in ("qa-grounded", "summarize", "classify", "extract-json", "bank-customer-service"):
        assert by_name[base]["language"] == "en" and by_name[f"{base}-zh"]["language"] == "zh"
    assert all(d["id"] == f"{d['name']}@{d['version']}" for d in described)


def test_a_template_builds_system_examples_and_wraps_only_the_last_user_turn():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "I was charged twice"}]
    out = TemplateRegistry().apply(USER, Prompt(messages=messages, template="classify"))
    assert out.template_id == "classify@1"
    system = out.messages[0]
    assert system["role"] == "system" and system["content"].startswith("You are a text classifier.")
    assert "complaint, question, request, praise, other" in system["content"]
    assert system["content"].endswith("Be brief.")  # the request's own system text is kept, after the template's
    assert [m["role"] for m in out.messages[1:5]] == ["user", "assistant", "user", "assistant"]  # few-shot turns
    assert out.messages[5]["content"] == "first"  # earlier turns are not rewrapped
    assert out.messages[-1]["content"] == "Text: I was charged twice\nLabel:"


def test_chinese_template_and_raw_text_prompts():
    out = TemplateRegistry().apply(USER, Prompt(text="今天天气很好。", template="summarize-zh"))
    assert out.text.startswith("你是一名撰写忠实") and out.text.endswith("需要摘要的文本：\n今天天气很好。")


def test_user_text_is_data_never_template_source():
    text = "{{ ''.__class__.__mro__ }} {% for x in range(3) %}x{% endfor %}"
    out = TemplateRegistry().apply(USER, Prompt(messages=[{"role": "user", "content": text}], template="summarize"))
    assert out.messages[-1]["content"] == f"Text to summarize:\n{text}"


@pytest.mark.parametrize(("source", "reason"), [
    ("\"{{ ''.__class__.__mro__[1].__subclasses__() }}\"", "attribute '__class__' of 'str' object is unsafe"),
    ("\"{{ cycler.__init__.__globals__.os }}\"", "attribute '__init__' of 'type' object is unsafe"),
    ("\"{% set x = [] %}{{ x.append(1) }}\"", "attribute 'append' of 'list' object is unsafe"),  # immutable
    ("\"{{ 'a' * 100000000 }}\"", "repetition above"),
    ("\"{{ 10 ** 100000 }}\"", "exponent above"),
    ("\"{{ undefined_name }}\"", "'undefined_name' is undefined"),  # StrictUndefined
])
def test_escapes_and_bombs_fail_at_load_naming_the_file(tmp_path, source, reason):
    _write(tmp_path, "evil.yaml", name="evil", task=source)
    with pytest.raises(ConfigError) as err:
        TemplateRegistry(dirs=[tmp_path])
    assert "evil.yaml" in str(err.value) and "evil@1" in str(err.value) and reason in str(err.value)


def test_a_syntax_error_names_field_and_line(tmp_path):
    _write(tmp_path, "bad.yaml", user="\"{{ input \"")
    with pytest.raises(ConfigError, match=r"user: Jinja syntax error on line 1"):
        TemplateRegistry(dirs=[tmp_path])


def test_versions_latest_pinned_and_duplicates(tmp_path):
    _write(tmp_path, "v1.yaml", name="mine", version=1, role="old")
    _write(tmp_path, "v2.yaml", name="mine", version=2, role="new")
    registry = TemplateRegistry(dirs=[tmp_path])
    assert registry.find("mine").id == "mine@2" and registry.find("mine@1").spec.role == "old"
    assert registry.find("mine@3") is None
    _write(tmp_path, "v2-again.yaml", name="mine", version=2, role="changed")
    with pytest.raises(ConfigError, match="defined twice"):
        TemplateRegistry(dirs=[tmp_path])


def test_selection_request_then_route_then_default():
    registry = TemplateRegistry(default="summarize", routes={"/v1/chat/completions": "classify@1"})
    msg = [{"role": "user", "content": "hi"}]
    assert registry.apply(USER, Prompt(messages=msg, route="/v1/chat/completions")).template_id == "classify@1"
    assert registry.apply(USER, Prompt(messages=msg, route="/v1/completions")).template_id == "summarize@1"
    picked = registry.apply(USER, Prompt(messages=msg, route="/v1/chat/completions", template="qa-grounded-zh"))
    assert picked.template_id == "qa-grounded-zh@1"
    assert TemplateRegistry().apply(USER, Prompt(messages=msg)).template_id == "model-chat-template"


def test_unknown_names_are_a_400_with_a_suggestion_or_a_config_error():
    with pytest.raises(ApiError) as err:
        TemplateRegistry().apply(USER, Prompt(messages=[{"role": "user", "content": "x"}], template="clasify"))
    assert err.value.status == 400 and err.value.code == "template_not_found" and "classify" in str(err.value)
    with pytest.raises(ConfigError, match="serve.templates.default: unknown template 'sumarize'"):
        TemplateRegistry(default="sumarize")


def test_an_input_dependent_escape_fails_the_request_with_a_400_not_a_500(tmp_path):
    sly = "\"{% if input == 'open' %}{{ ''.__class__ }}{% endif %}{{ input }}\""
    _write(tmp_path, "sly.yaml", name="sly", user=sly)
    registry = TemplateRegistry(dirs=[tmp_path])  # the probe input does not reach the branch
    with pytest.raises(ApiError) as err:
        registry.apply(USER, Prompt(messages=[{"role": "user", "content": "open"}], template="sly"))
    assert err.value.status == 400 and err.value.code == "template_error" and "unsafe" in str(err.value)
