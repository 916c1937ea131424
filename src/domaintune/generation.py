"""Chat-style generation with the model's own chat template (used by `chat` and export samples).

`model.generate` runs in a worker thread that feeds a `TextIteratorStreamer`. An exception in
that thread would otherwise be lost and leave the reader waiting forever (huggingface/
transformers#22576), so the worker's exception is re-raised in the reader, and a reader that
sees no new text for `timeout_s` gives up with a ModelError and tells the worker to stop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from domaintune.errors import ModelError

# Defaults of the sampling settings (export samples and `chat`); they are not config fields yet.
REPETITION_PENALTY = 1.1
TOP_P = 0.95
# Longest wait for the next piece of text: prefill of a long prompt on CPU is the slow case.
TIMEOUT_S = 300.0


def build_prompt_ids(tokenizer, messages: list[dict[str, str]]):
    """Token ids of `messages` rendered with the tokenizer's chat template (plain text if none)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        return ids["input_ids"]
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
    return tokenizer(text, return_tensors="pt").input_ids


def generate_reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 128,
                   temperature: float = 0.0, seed: int = 0, *, top_p: float = TOP_P,
                   repetition_penalty: float = REPETITION_PENALTY, timeout_s: float = TIMEOUT_S) -> str:
    """One assistant reply; temperature 0 is greedy (deterministic)."""
    return "".join(stream_reply(model, tokenizer, messages, max_new_tokens, temperature, seed, top_p=top_p,
                                repetition_penalty=repetition_penalty, timeout_s=timeout_s))


def _pad_id(tokenizer) -> int | None:
    # `pad or eos` would turn a valid pad id of 0 into EOS
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _generate_kwargs(tokenizer, input_ids, max_new_tokens: int, temperature: float, top_p: float,
                     repetition_penalty: float) -> dict:
    import torch

    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                  pad_token_id=_pad_id(tokenizer), do_sample=temperature > 0,
                  repetition_penalty=repetition_penalty)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:  # explicit, so a model's generation_config cannot silently turn sampling on
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _stop_when_set(event: threading.Event):
    """A stopping criterion that ends generation once `event` is set (generate asks after each token)."""
    import torch
    from transformers import StoppingCriteria

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopWhenSet()


def stream_reply(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 128,
                 temperature: float = 0.0, seed: int = 0, *, top_p: float = TOP_P,
                 repetition_penalty: float = REPETITION_PENALTY, timeout_s: float = TIMEOUT_S) -> Iterator[str]:
    """Yield the reply's text piece by piece as it is generated.

    Raises the worker's own exception if `generate` fails, and ModelError if no text arrives for
    `timeout_s` seconds."""
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    device = next(model.parameters()).device
    input_ids = build_prompt_ids(tokenizer, messages).to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout_s)
    stop = threading.Event()
    failure: list[BaseException] = []
    kwargs = _generate_kwargs(tokenizer, input_ids, max_new_tokens, temperature, top_p, repetition_penalty)
    kwargs.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_stop_when_set(stop)]))

    def work() -> None:
        try:
            model.generate(**kwargs)
        except BaseException as exc:  # handed to the reader, which re-raises it
            failure.append(exc)
            streamer.end()  # wakes the reader up; generate never got to end the stream itself

    torch.manual_seed(seed)
    worker = threading.Thread(target=work, daemon=True, name="domaintune-generate")
    worker.start()
    try:
        yield from streamer
    except queue.Empty:
        raise ModelError(f"generation produced no new text for {timeout_s:g} s and was stopped; the model may be "
                         f"too large for this device (try a shorter prompt, fewer max_new_tokens, or a GPU)") from None
    finally:
        stop.set()  # also when the reader stops early (Ctrl-C in `chat`): don't generate for nobody
    worker.join()
    if failure:
        raise failure[0]
