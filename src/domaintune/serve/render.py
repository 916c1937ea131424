"""Prompt -> token ids with the model's own chat template (the step after template and retrieval)."""

from __future__ import annotations

from domaintune.serve.errors import invalid
from domaintune.serve.hooks import Prompt


class ChatRenderer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompt: Prompt) -> list[int]:
        import jinja2

        from domaintune.generation import build_prompt_ids

        if prompt.messages is not None:
            try:
                ids = build_prompt_ids(self.tokenizer, prompt.messages)[0].tolist()
            except jinja2.TemplateError as err:  # e.g. a template that insists on alternating roles
                raise invalid(f"the model's chat template rejected the messages: {err}", "messages",
                              code="invalid_messages") from None
        else:
            ids = self.tokenizer(prompt.text or "").input_ids
        if not ids:
            raise invalid("the prompt is empty", "messages" if prompt.messages is not None else "prompt")
        return ids
