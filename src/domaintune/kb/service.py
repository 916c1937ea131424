"""From the config to a built or opened knowledge base (what `domaintune kb` and `serve` call)."""

from __future__ import annotations

from pathlib import Path

from domaintune.artifacts import RunDir
from domaintune.config import Config
from domaintune.config.kb import KBConfig
from domaintune.errors import ConfigError, ModelError
from domaintune.kb.chunking import TokenCounter
from domaintune.kb.embed import Embedder, build_embedder
from domaintune.kb.index import BuildReport, build
from domaintune.kb.search import KnowledgeBase
from domaintune.kb.sources import read_documents


def kb_section(cfg: Config) -> KBConfig:
    if cfg.kb is None:
        raise ConfigError(["kb: the config has no kb section; add `kb: {sources: [{stream: domain, acl: [public]}]}`"
                           " (see docs/kb.md)"])
    return cfg.kb


def index_dir(cfg: Config) -> Path:
    kb = kb_section(cfg)
    return Path(kb.index_dir) if kb.index_dir else cfg.run_path / "kb" / kb.name


def token_counter(cfg: Config) -> tuple[TokenCounter, str]:
    """Counts tokens as the serving model does: the configured tokenizer, else model.base's."""
    from transformers import AutoTokenizer

    where = cfg.kb.chunk.tokenizer or cfg.model.base
    try:
        tok = AutoTokenizer.from_pretrained(str(where), trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"kb.chunk.tokenizer: cannot load a tokenizer from '{where}' offline ({err}); set "
                         f"kb.chunk.tokenizer to the serving model's folder") from None
    return (lambda text: len(tok(text, add_special_tokens=False).input_ids)), f"{Path(str(where)).name}"


def embedder_for(kb: KBConfig, threads: int = 1) -> Embedder | None:
    if kb.retrieval.mode == "lexical":
        return None
    return build_embedder(kb.retrieval.embedder, kb.retrieval.embedder_model, threads)


def build_from_config(cfg: Config, counter: TokenCounter | None = None, embedder: Embedder | None = None,
                      tokenizer_id: str | None = None) -> BuildReport:
    kb = kb_section(cfg)
    if counter is None:
        counter, tokenizer_id = token_counter(cfg)
    if embedder is None:
        embedder = embedder_for(kb)
    docs = read_documents(kb, RunDir(cfg.run_path))
    settings = {"max_tokens": kb.chunk.max_tokens, "overlap_tokens": kb.chunk.overlap_tokens,
                "tokenizer": tokenizer_id or "custom"}
    return build(index_dir(cfg), docs, counter, settings, embedder, kb.name)


def open_from_config(cfg: Config, embedder: Embedder | None = None, mode: str | None = None) -> KnowledgeBase:
    kb = kb_section(cfg)
    mode = mode or kb.retrieval.mode
    if embedder is None and mode != "lexical":
        embedder = embedder_for(kb)
    r = kb.retrieval
    return KnowledgeBase(kb.name, index_dir(cfg), mode=mode, embedder=embedder, top_k=r.top_k,
                         candidates=r.candidates, rrf_k=r.rrf_k, open_principal=kb.open_principal,
                         sentences=r.sentences)
