"""Helpers of the experiments tests: tiny random model versions and a server with experiments on."""

from __future__ import annotations

from pathlib import Path

from fixtures.tiny_model import build_tokenizer


def build_version_dir(out_dir: Path, seed: int) -> Path:
    """A tiny Llama whose greedy output varies (untied, large init); another seed is another 'version'."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=False, initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class ListAuditor:
    def __init__(self):
        self.records = []

    def record(self, record) -> None:
        self.records.append(record)


def start_experiment_server(primary_dir: Path, versions: dict[str, Path], settings, hooks=None):
    from serve_helpers import ThreadServer

    from domaintune.serve.app import create_app
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving
    from domaintune.serve.models_registry import Served
    from domaintune.serve.render import ChatRenderer

    def engine(folder: Path, name: str):
        model, tokenizer = load_for_serving(folder)
        return HFEngine(model, tokenizer, name, SchedulerLimits(max_running=4, threads=1)), ChatRenderer(tokenizer)

    main_engine, renderer = engine(primary_dir, "tiny")
    served = {vid: Served(*engine(folder, vid)) for vid, folder in versions.items()}
    return ThreadServer(create_app(main_engine, renderer, settings, hooks, versions=served), settings)
