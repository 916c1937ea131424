"""The Ollama Modelfile: its TEMPLATE, rendered by a Go text/template interpreter with Ollama's
semantics, gives exactly apply_chat_template's text for ChatML (incl. SmolLM2's injected default
system), Llama-3 and Gemma templates; plus the interpreter itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from domaintune.errors import ModelError
from domaintune.export import gotemplate, modelfile
from fixtures.tiny_gemma3 import GEMMA3_CHAT_TEMPLATE

TEMPLATES = Path(__file__).resolve().parents[3] / "src" / "domaintune" / "instruct" / "templates"
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
           "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA3 = ("{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] "
          "+ '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}"
          "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
          "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}"
          "{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix "
          "if loop.first else \"\") }}{{- message['content'] | trim -}}{{ '<end_of_turn>\n' }}{%- endfor -%}"
          "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}")


def _tokenizer(template: str):
    from fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template,family,system", [
    (SMOLLM2, "chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    ((TEMPLATES / "chatml.jinja").read_text(), "chatml", None),
    ((TEMPLATES / "qwen.jinja").read_text(), "chatml", "You are a helpful assistant."),
    ((TEMPLATES / "llama3.jinja").read_text(), "llama3", None),
    (GEMMA3, "gemma", None),
    (GEMMA3_CHAT_TEMPLATE, "gemma", None),  # Gemma-3's own, as in its tokenizer_config.json
])
def test_modelfile_template_renders_like_the_chat_template(template, family, system):
    tok = _tokenizer(template)
    text, info = modelfile.build("model-q8_0.gguf", tok, 4096)
    assert info["family"] == family and info["system"] == system
    assert info["render_equal"], info["differences"]
    assert text.startswith("FROM ./model-q8_0.gguf\n") and "PARAMETER num_ctx 4096" in text
    assert f'PARAMETER stop "{modelfile.families()[family]["stop"][0]}"' in text
    assert ("SYSTEM" in text) == (system is not None)
    # the equality is checked on real text: a conversation with a user-set system message
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fee?"},
            {"role": "assistant", "content": "15 USD."}, {"role": "user", "content": "And 海港?"}]
    ollama = modelfile.ollama_render(modelfile.families()[family]["template"], msgs)
    assert ollama == modelfile.hf_render(tok, msgs) and "Be brief." in ollama and "15 USD." in ollama


def test_a_wrong_template_is_reported_as_different():
    tok = _tokenizer(SMOLLM2)
    wrong = modelfile.families()["chatml"]["template"].replace("<|im_end|>\n{{ else }}", "<|im_end|>{{ else }}")
    assert modelfile.render_differences(tok, wrong, "x")


def test_unknown_family_and_missing_template_are_clear_errors():
    with pytest.raises(ModelError, match="none of the supported families"):
        modelfile.detect_family("{% for m in messages %}### {{ m['content'] }}{% endfor %}")
    with pytest.raises(ModelError, match="no chat template"):
        modelfile.detect_family(None)


def test_go_template_subset():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}], "System": ""}
    assert gotemplate.render('{{- range $i, $m := .Messages }}{{ $i }}:{{ .Role }}{{ if eq $i 0 }},{{ end }}'
                             '{{ end }} ', data) == "0:user,1:assistant "
    assert gotemplate.render('{{ $x := "" }}{{ range .Messages }}{{ $x = .Content }}{{ end }}{{ $x }}', data) == "b"
    assert gotemplate.render('{{ if and .System (eq 1 1) }}s{{ else if not .System }}n{{ else }}e{{ end }}',
                             data) == "n"
    assert gotemplate.render("x  {{- \"y\" -}}  \n z", data) == "xyz"
    with pytest.raises(gotemplate.TemplateError, match="unsupported function"):
        gotemplate.render("{{ len .Messages }}", data)
    with pytest.raises(gotemplate.TemplateError, match="missing"):
        gotemplate.render("{{ if .System }}x", data)
