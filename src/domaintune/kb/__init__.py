"""Knowledge base: chunking, lexical + dense index, per-document ACL inside retrieval, citations, kb eval.

`KnowledgeBase.search(principal, query, k) -> list[Hit]` is the one search API (chat retrieval,
the knowledge-base tool, `domaintune kb query`). A service: imports core modules only; serve imports it.
"""

from domaintune.kb.search import Hit, KnowledgeBase

__all__ = ["Hit", "KnowledgeBase"]
