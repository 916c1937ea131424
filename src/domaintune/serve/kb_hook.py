"""The knowledge base in the request path: `KBRetriever` (the Retriever hook) and `KBService` (app.state.kb).

A chat request names its KB in the extension field `kb`, or the config binds one (`kb.bind`).
Retrieval runs with the request's principal, so its ACL mask is applied before ranking; the
chunks go into the prompt as delimited untrusted data, and after generation the answer's [n]
markers become the `citations` extension field (markers naming no source are removed).
"""

from __future__ import annotations

import dataclasses

from domaintune.kb.answer import AnswerFilter, last_user_text, with_context
from domaintune.kb.index import KBError
from domaintune.kb.search import KnowledgeBase
from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal, Prompt
from domaintune.serve.permissions import KB_QUERY


class KBService:
    """The server's knowledge bases by name (app.state.kb)."""

    def __init__(self, bases: dict[str, KnowledgeBase], bound: str | None = None):
        self.bases, self.bound = dict(bases), bound

    def names(self) -> list[str]:
        return sorted(self.bases)

    def get(self, name: str) -> KnowledgeBase:
        if name not in self.bases:
            raise ApiError(404, f"knowledge base '{name}' does not exist (this server has: "
                                f"{', '.join(self.names()) or 'none'})", code="kb_not_found", param="kb")
        return self.bases[name]

    def documents(self, name: str) -> list[dict]:
        return self.get(name).documents()

    def search(self, principal, query: str, k: int | None = None) -> list:
        """The `kb_search` tool's entry: the bound knowledge base (or the only one), with the caller's rights."""
        name = self.bound or (self.names()[0] if len(self.bases) == 1 else None)
        if name is None:
            raise ApiError(400, "several knowledge bases are served and none is bound: set `bind: true` on one "
                                "of them (docs/kb.md)", code="kb_not_bound", param="kb")
        return self.get(name).search(principal, query, k)

    def reindex(self, name: str) -> str:
        """Load the index that `domaintune kb build` rewrote on disk; returns the new version."""
        kb = self.get(name)
        try:
            kb.reload()
        except KBError as err:
            raise ApiError(409, str(err), code="kb_index_unusable") from None
        return kb.version


class KBRetriever:
    """serve.hooks.Retriever over a KBService."""

    def __init__(self, service: KBService):
        self.service = service

    def _chosen(self, principal: Principal, prompt: Prompt) -> KnowledgeBase | None:
        name = getattr(prompt, "kb", None) or self.service.bound
        if name is None:
            return None
        kb = self.service.get(name)
        if KB_QUERY not in principal.permissions:
            raise ApiError(403, f"principal '{principal.id}' lacks the '{KB_QUERY}' permission needed to use "
                                f"knowledge base '{name}'", code="permission_denied", param="kb")
        if not principal.allows("kbs", name):
            raise ApiError(403, f"this key is not scoped for knowledge base '{name}'", code="permission_denied",
                           param="kb")
        return kb

    def augment(self, principal: Principal, prompt: Prompt) -> Prompt:
        kb = self._chosen(principal, prompt)
        if kb is None:
            return prompt
        if prompt.messages is None:
            raise ApiError(400, "knowledge-base answers need /v1/chat/completions (messages)", code="invalid_value",
                           param="kb")
        question = last_user_text(prompt.messages)
        shown = kb.passages(kb.search(principal, question), question)  # what kb eval measures
        sources = [p.source(kb.name) for p in shown]
        messages = with_context(prompt.messages, shown)  # no hits: empty sources, the model is told to say so
        # the response cache keys on these: after a revoke, a relabel or a re-index no answer cached before is served
        return dataclasses.replace(prompt, messages=messages, sources=[*prompt.sources, *sources], kb=kb.name,
                                   acl_fingerprint=kb.fingerprint(principal), index_version=kb.version)

    @staticmethod
    def answer_filter(prompt: Prompt) -> AnswerFilter | None:
        """The post-generation step for this request, when retrieval added sources."""
        if not getattr(prompt, "kb", None):
            return None
        return AnswerFilter([s for s in prompt.sources if s.get("kb") == prompt.kb])


def with_kb(cfg, hooks=None):
    """`hooks` (default: the open ones) with retrieval from the config's `kb:` section, or unchanged
    when the config has none. Opening the index checks its embedder against the configured one."""
    from domaintune.kb.service import open_from_config
    from domaintune.serve.hooks import Hooks

    hooks = hooks or Hooks()
    if cfg is None or cfg.kb is None:
        return hooks
    kb = open_from_config(cfg)
    service = KBService({kb.name: kb}, bound=kb.name if cfg.kb.bind else None)
    return dataclasses.replace(hooks, retrieval=KBRetriever(service))
