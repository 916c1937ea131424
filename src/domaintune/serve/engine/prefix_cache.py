"""Automatic prefix caching for the CPU engine: the KV of recently prefilled prompts, reused by a later
prompt of the same tenant that starts with the same tokens.

Chat prompts share long prefixes (the chat template's system turn, a prompt template's instructions and
few-shot examples), and on a CPU the prefill of those tokens is most of a short request's compute. vLLM calls
this automatic prefix caching; like its `cache_salt`, entries here belong to one tenant, so no tenant can
learn from timing which prefixes another sent.

Entries are whole prompts' KV tensors (one row, `[1, kv_heads, tokens, head_dim]` per layer), evicted least
recently used first once their bytes exceed the budget. A hit is the longest common token prefix with any
entry of the tenant, at least `min_tokens` long and always one token short of the whole prompt, so the engine
still runs the prompt's last token and gets its logits.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Entry:
    tenant: str
    ids: tuple[int, ...]
    layers: list  # [(keys, values)] per layer, one row each
    nbytes: int


def _common_prefix(a: tuple[int, ...], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n


class PrefixCache:
    def __init__(self, max_bytes: int, min_tokens: int = 16):
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], _Entry] = OrderedDict()
        self._by_head: dict[tuple[str, tuple[int, ...]], set[tuple[str, tuple[int, ...]]]] = {}
        self.nbytes = 0        # bytes of cached KV (the budget's measure)
        self.hit_tokens = 0    # prompt tokens served from the cache since start
        self.looked_up = 0     # prompt tokens looked up since start

    def _head(self, tenant: str, ids) -> tuple[str, tuple[int, ...]]:
        return tenant, tuple(ids[: self.min_tokens])

    def lookup(self, tenant: str, ids: list[int]) -> tuple[int, list | None]:
        """(n, layers): the first n tokens of `ids` have cached KV `layers` (views; never written in place:
        transformers' cache concatenates new tensors), or (0, None)."""
        self.looked_up += len(ids)
        limit = len(ids) - 1
        if limit < self.min_tokens:
            return 0, None
        best, found = 0, None
        for key in self._by_head.get(self._head(tenant, ids), ()):
            entry = self._entries[key]
            n = _common_prefix(entry.ids, ids, limit)
            if n > best:
                best, found = n, key
        if found is None or best < self.min_tokens:
            return 0, None
        self._entries.move_to_end(found)
        self.hit_tokens += best
        layers = [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[found].layers]
        return best, layers

    def store(self, tenant: str, ids: list[int], layers) -> None:
        """Keep the KV of a fully prefilled prompt. `layers` holds one row per layer whose last len(ids)
        columns are this prompt (earlier columns may be left padding); they are copied, so the caller's
        batch tensors are not kept alive."""
        if len(ids) < self.min_tokens:
            return
        key = (tenant, tuple(ids))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        n = len(ids)
        nbytes = sum(2 * k[:, :, -n:].numel() * k.element_size() for k, _ in layers)
        if nbytes > self.max_bytes:
            return
        copied = [(k[:, :, -n:].clone(), v[:, :, -n:].clone()) for k, v in layers]
        self._entries[key] = _Entry(tenant, key[1], copied, nbytes)
        self._by_head.setdefault(self._head(tenant, ids), set()).add(key)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            old_key, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            head = self._head(old.tenant, old.ids)
            self._by_head[head].discard(old_key)
            if not self._by_head[head]:
                del self._by_head[head]
