"""domaintune.generation: streamed replies from the tiny model, a failing or stalled `generate`
thread reaching the caller instead of hanging it, and the generation arguments (pad id 0 kept)."""

from __future__ import annotations

import threading

import pytest
import torch

from domaintune.errors import ModelError
from domaintune.generation import generate_reply, stream_reply

MESSAGES = [{"role": "user", "content": "What is the wire fee?"}]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


class FakeModel(torch.nn.Module):
    """A model whose `generate` runs `behaviour(kwargs)` in the worker thread."""

    def __init__(self, behaviour):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.behaviour, self.kwargs = behaviour, None

    def generate(self, **kwargs):
        self.kwargs = kwargs
        return self.behaviour(kwargs)


def test_greedy_reply_is_deterministic_and_streams_the_same_text(model_and_tokenizer):
    model, tok = model_and_tokenizer
    reply = generate_reply(model, tok, MESSAGES, max_new_tokens=6)
    assert reply == generate_reply(model, tok, MESSAGES, max_new_tokens=6)
    assert "".join(stream_reply(model, tok, MESSAGES, max_new_tokens=6)) == reply
    assert len(tok(reply, add_special_tokens=False).input_ids) <= 6


@pytest.mark.timeout(60)
def test_an_exception_in_generate_reaches_the_caller(model_and_tokenizer):
    _, tok = model_and_tokenizer

    def boom(kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    with pytest.raises(RuntimeError, match="out of memory"):
        generate_reply(FakeModel(boom), tok, MESSAGES)


@pytest.mark.timeout(60)
def test_an_exception_after_some_text_still_reaches_the_caller(model_and_tokenizer):
    _, tok = model_and_tokenizer

    def half_then_boom(kwargs):
        kwargs["streamer"].put(torch.tensor([kwargs["input_ids"][0, -1].item()]))  # the prompt (skipped)
        kwargs["streamer"].put(torch.tensor(tok("hello there", add_special_tokens=False).input_ids))
        raise ValueError("bad sampling argument")

    pieces = []
    with pytest.raises(ValueError, match="bad sampling argument"):
        for piece in stream_reply(FakeModel(half_then_boom), tok, MESSAGES):
            pieces.append(piece)
    assert "".join(pieces).strip() == "hello there"  # the text before the failure was delivered


@pytest.mark.timeout(60)
def test_a_stalled_generate_times_out_with_a_clear_error_and_is_told_to_stop(model_and_tokenizer):
    _, tok = model_and_tokenizer
    stopped = threading.Event()

    def stall(kwargs):
        stop = kwargs["stopping_criteria"]
        while not stop(kwargs["input_ids"], None):  # like generate: asks the criteria after each step
            threading.Event().wait(0.01)
        stopped.set()

    with pytest.raises(ModelError, match=r"no new text for 0.2 s"):
        generate_reply(FakeModel(stall), tok, MESSAGES, timeout_s=0.2)
    assert stopped.wait(10), "the abandoned generate thread must be told to stop"


def test_pad_id_zero_is_kept_not_replaced_by_eos(model_and_tokenizer):
    from transformers import AutoTokenizer

    _, tok = model_and_tokenizer
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.eos_token = "<|im_end|>"
    assert tok.pad_token_id == 0 and tok.eos_token_id != 0
    model = FakeModel(lambda kwargs: kwargs["streamer"].end())
    generate_reply(model, tok, MESSAGES)
    assert model.kwargs["pad_token_id"] == 0

    tok.pad_token = None
    generate_reply(model, tok, MESSAGES)
    assert model.kwargs["pad_token_id"] == tok.eos_token_id


def test_sampling_settings_are_parameters_with_the_old_defaults(model_and_tokenizer):
    _, tok = model_and_tokenizer
    model = FakeModel(lambda kwargs: kwargs["streamer"].end())
    generate_reply(model, tok, MESSAGES)
    assert model.kwargs["repetition_penalty"] == 1.1 and model.kwargs["do_sample"] is False
    assert model.kwargs["top_p"] is None and model.kwargs["temperature"] is None
    generate_reply(model, tok, MESSAGES, temperature=0.7)
    assert (model.kwargs["top_p"], model.kwargs["temperature"]) == (0.95, 0.7)
    generate_reply(model, tok, MESSAGES, temperature=0.7, top_p=0.5, repetition_penalty=1.0)
    assert (model.kwargs["top_p"], model.kwargs["repetition_penalty"]) == (0.5, 1.0)
