"""Identity checks across the whole run: unique ids and exact duplicate texts (near-duplicates:
`governance.neardup`, clustered in `merge.py`).

Both run once over the whole corpus after the shards, in keeper order (merge.py), so which copy
survives never depends on timing or file-system order. What they remember per record lives in `memo`:
a dict by default; the merge swaps in an on-disk table (merge_index.DiskMap) so that memory does
not grow with the corpus.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from domaintune.data.records import Record, Reject

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


class UniqueIds:
    """Ids key the split and every downstream lineage lookup, so a repeated id is rejected."""

    name = "dedup.ids"
    corpus_wide = True  # needs every record: runs after the shards, in keeper order

    def __init__(self) -> None:
        self.memo: MutableMapping[str, str] = {}  # id -> "file:line" of the record that holds it

    def __call__(self, rec: Record) -> Record | Reject:
        first = self.memo.get(rec.id)
        if first is None:
            self.memo[rec.id] = f"{rec.path}:{rec.line}" if rec.line is not None else rec.path
            return rec
        return Reject.of(rec, "duplicate_id",
                         f"id '{rec.id}' is already used by {first}; make id_field values unique "
                         "or give the sources distinct names (derived ids start with the name)")


class ExactDedup:
    """Drop a document whose normalized text was already kept (hashed: memory stays small)."""

    name = "dedup.exact"
    corpus_wide = True

    def __init__(self) -> None:
        self.memo: MutableMapping[bytes, str] = {}  # text digest -> id of the kept copy

    def __call__(self, rec: Record) -> Record | Reject:
        kept = self.memo.get(rec.digest)
        if kept is None:
            self.memo[rec.digest] = rec.id
            return rec
        return Reject.of(rec, EXACT_DUPLICATE, f"same normalized text as kept record '{kept}'")
