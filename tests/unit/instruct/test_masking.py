"""Loss only on assistant tokens: decode exactly the labelled spans and compare with the turns."""

import pytest
from transformers import AutoTokenizer

from domaintune.instruct.masking import TemplateError, encode_conversation
from domaintune.instruct.templates import apply_template

MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the wire fee?"},
            {"role": "assistant", "content": "It is 35 dollars."},
            {"role": "user", "content": "And for Premier customers?"},
            {"role": "assistant", "content": "20 dollars."}]
END = {None: "<|im_end|>\n", "chatml": "<|im_end|>\n", "qwen": "<|im_end|>\n", "llama3": "<|eot_id|>",
       "alpaca": "<|endoftext|>"}


@pytest.fixture()
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("template", [None, "chatml", "llama3", "qwen", "alpaca"])
def test_labelled_spans_are_exactly_the_assistant_turns(tokenizer, template, labelled_spans):
    """None = the tiny tokenizer's own template (no {% generation %}: masked by incremental rendering);
    the shipped ones use transformers' assistant mask."""
    apply_template(tokenizer, template)
    enc = encode_conversation(tokenizer, MESSAGES)
    assert len(enc.input_ids) == len(enc.loss_mask)
    assert labelled_spans(tokenizer, enc) == [f"It is 35 dollars.{END[template]}", f"20 dollars.{END[template]}"]
    assert tokenizer.decode(enc.input_ids) == tokenizer.apply_chat_template(MESSAGES, tokenize=False)


def test_both_masking_paths_agree(tokenizer):
    """chatml with {% generation %} vs the same template without the markers (incremental rendering)."""
    apply_template(tokenizer, "chatml")
    marked = encode_conversation(tokenizer, MESSAGES)
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", "")
    rendered = encode_conversation(tokenizer, MESSAGES)
    assert marked.input_ids == rendered.input_ids and marked.loss_mask == rendered.loss_mask


def test_a_template_that_rewrites_history_is_refused(tokenizer):
    # renders only the last message: prefixes are not prefixes of the whole
    tokenizer.chat_template = "{{ messages[-1]['role'] }}: {{ messages[-1]['content'] }}"
    with pytest.raises(TemplateError, match="generation"):
        encode_conversation(tokenizer, MESSAGES)


def test_tool_calls_are_learned_and_tool_results_are_context(tokenizer, labelled_spans):
    apply_template(tokenizer, "chatml")
    messages = [{"role": "user", "content": "Rate for 12 months?"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"type": "function", "function": {"name": "td_rate", "arguments": {"months": 12}}}]},
                {"role": "tool", "content": "3.75"},
                {"role": "assistant", "content": "3.75% a year."}]
    tools = [{"type": "function", "function": {"name": "td_rate", "parameters": {}}}]
    spans = labelled_spans(tokenizer, encode_conversation(tokenizer, messages, tools))
    assert spans == ['<tool_call>{"name": "td_rate", "arguments": {"months": 12}}</tool_call><|im_end|>\n',
                     "3.75% a year.<|im_end|>\n"]
