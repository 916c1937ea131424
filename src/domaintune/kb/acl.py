"""Per-document access control: documents carry labels, a principal holds a set of labels, and the
intersection decides. The result is a row mask handed to both retrievers before they rank.

Labels: `public` (every principal that may query the KB), `user:<name>`, `group:<name>`, or any
label an API key's `kb_labels` scope lists. A key's scopes only ever narrow: `kb_labels` is
intersected with what the user and groups already grant, never added to it. Deny by default: a
document without labels matches no governed principal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

PUBLIC = "public"
OPEN_ID = "local"  # serve.hooks.OpenAccess's principal: no governance configured


@dataclass(frozen=True)
class Access:
    """What one principal may read: every document (`everything`) or those sharing a label."""

    labels: frozenset[str]
    everything: bool = False

    def admits(self, doc_labels: Iterable[str]) -> bool:
        return self.everything or not self.labels.isdisjoint(doc_labels)

    def fingerprint(self, index_version: str) -> str:
        """For cache keys: changes when the rights or the index change (a revoke, a re-index)."""
        body = ("*" if self.everything else "\n".join(sorted(self.labels))) + "\0" + index_version
        return hashlib.sha256(body.encode()).hexdigest()[:32]


def is_open(principal) -> bool:
    """The open principal of a server without governance (no key, no user, no groups)."""
    return (getattr(principal, "id", None) == OPEN_ID and getattr(principal, "key_id", None) is None
            and getattr(principal, "user", None) is None and not getattr(principal, "groups", ()))


def access_of(principal, open_principal: str = "all", narrow: Iterable[str] | None = None) -> Access:
    """The principal's readable labels. `narrow` (an app or agent identity's labels) can only remove."""
    scopes: Mapping = getattr(principal, "scopes", {}) or {}
    if is_open(principal) and open_principal == "all" and "kb_labels" not in scopes and narrow is None:
        return Access(frozenset(), everything=True)
    labels = {PUBLIC}
    if getattr(principal, "user", None):
        labels.add(f"user:{principal.user}")
    labels |= {f"group:{g}" for g in getattr(principal, "groups", ())}
    if is_open(principal) and open_principal == "all":
        labels = None  # everything, narrowed below
    for limit in (scopes.get("kb_labels"), narrow):
        if limit is not None:
            limit = frozenset(limit)
            labels = set(limit) if labels is None else labels & limit
    return Access(frozenset(labels or ()))


class LabelMask:
    """Label -> bitmap over chunk rows, so a principal's mask is a few vector ORs per query."""

    def __init__(self, row_labels: list[frozenset[str]]):
        self.rows = len(row_labels)
        self._by_label: dict[str, np.ndarray] = {}
        for row, labels in enumerate(row_labels):
            for label in labels:
                self._by_label.setdefault(label, np.zeros(self.rows, dtype=bool))[row] = True

    def mask(self, access: Access) -> np.ndarray:
        if access.everything:
            return np.ones(self.rows, dtype=bool)
        out = np.zeros(self.rows, dtype=bool)
        for label in access.labels:
            bits = self._by_label.get(label)
            if bits is not None:
                out |= bits
        return out
