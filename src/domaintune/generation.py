"""Chat-style generation with the model's own chat template (used by `chat` and export samples)."""

from __future__ import annotations

from collections.abc import Iterator


def build_prompt_ids(tokenizer, messages: list[dict[str, str]]):
    """Token ids of `messages` rendered with the tokenizer's chat template (plain text if none)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        return ids["input_ids"]
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
    return tokenizer(text, return_tensors="pt").input_ids


def generate_reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 128,
                   temperature: float = 0.0, seed: int = 0) -> str:
    """One assistant reply; temperature 0 is greedy (deterministic)."""
    return "".join(stream_reply(model, tokenizer, messages, max_new_tokens, temperature, seed))


def stream_reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 128,
                 temperature: float = 0.0, seed: int = 0) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    device = next(model.parameters()).device
    input_ids = build_prompt_ids(tokenizer, messages).to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    torch.manual_seed(seed)
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                  max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                  do_sample=temperature > 0, repetition_penalty=1.1)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=0.95)
    else:  # explicit, so a model's generation_config cannot silently turn sampling on
        kwargs.update(temperature=None, top_p=None, top_k=None)
    worker = Thread(target=model.generate, kwargs=kwargs, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
