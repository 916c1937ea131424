"""Helpers of the serving tests: a tiny model whose greedy output varies, and a real uvicorn server.

The shared tiny model (tie_word_embeddings, small init) repeats its last token forever, which
would make "batched == sequential" trivially true; this one is untied with a larger init so
every prompt continues differently.
"""

from __future__ import annotations

import time
from pathlib import Path

from fixtures.loopback import LoopbackServer
from fixtures.tiny_model import build_tokenizer


def build_varied_model_dir(out_dir: Path, context: int = 256) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         tie_word_embeddings=False, initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class ThreadServer(LoopbackServer):
    """The loopback server, with the serving tests' openai client and engine handle."""

    @property
    def engine(self):
        return self.app.state.engine

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=60, **kwargs)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
