"""Render a conversation with the chat template and mark the tokens the model must learn.

Loss goes only to assistant tokens (their content and end-of-turn marker): the model learns
to answer, not to predict users or system prompts. Two ways to find them:
- templates with `{% generation %}` blocks: transformers' `return_assistant_tokens_mask`;
- any other template: render the conversation up to each assistant turn with the generation
  prompt and with the turn, the difference is that turn's text; characters map to tokens
  through the fast tokenizer's offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domaintune.instruct.templates import has_generation_marks


class TemplateError(ValueError):
    """The template cannot be used to locate assistant turns for this conversation."""


@dataclass
class Encoded:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is part of an assistant turn


def _render(tokenizer, messages, tools, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict[str, Any]], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the (start, end) character span of every assistant turn."""
    full = _render(tokenizer, messages, tools, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], tools, True)
        upto = _render(tokenizer, messages[: i + 1], tools, False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TemplateError("the chat template does not render conversations prefix by prefix, so assistant "
                                "turns cannot be located; add {% generation %} markers around assistant turns")
        spans.append((len(before), len(upto)))
    return full, spans


def _mask_by_rendering(tokenizer, messages, tools) -> Encoded:
    text, spans = assistant_char_spans(tokenizer, messages, tools)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return Encoded(list(enc["input_ids"]), mask)


def encode_conversation(tokenizer, messages: list[dict[str, Any]], tools=None) -> Encoded:
    """Token ids of the rendered conversation and its assistant-token mask."""
    if has_generation_marks(tokenizer.chat_template or ""):
        out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return Encoded(list(out["input_ids"]), list(out["assistant_masks"]))
    return _mask_by_rendering(tokenizer, messages, tools)
