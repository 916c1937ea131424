import pytest
from transformers import AutoTokenizer

from domaintune.errors import ConfigError
from domaintune.instruct.templates import apply_template, load_template, named_templates, template_problem

MESSAGES = [{"role": "user", "content": "Fee?"}, {"role": "assistant", "content": "$35."}]


@pytest.fixture()
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_shipped_templates_are_listed():
    assert {"chatml", "llama3", "qwen", "alpaca"} <= set(named_templates())


def test_default_is_the_tokenizers_own(tokenizer):
    own = tokenizer.chat_template
    assert apply_template(tokenizer, None) == own


@pytest.mark.parametrize("name", ["chatml", "llama3", "qwen", "alpaca"])
def test_named_templates_render_and_prompt_for_the_answer(tokenizer, name):
    apply_template(tokenizer, name)
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    prompt = tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert "Fee?" in text and "$35." in text and text.startswith(prompt)


def test_custom_file_template_is_saved_with_the_tokenizer(tokenizer, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}", encoding="utf-8")
    apply_template(tokenizer, str(path))
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded.apply_chat_template(MESSAGES, tokenize=False) == "[user] Fee?\n[assistant] $35.\n"


def test_unknown_template_suggests_the_closest(tokenizer):
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        load_template("chatm", tokenizer)
    assert "chatm" in template_problem("chatm") and template_problem("llama3") is None


def test_a_tokenizer_without_template_needs_one(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        load_template(None, tokenizer)
