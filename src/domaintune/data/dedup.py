"""Identity checks across the whole run: unique ids and exact duplicate texts (near-duplicates:
`governance.neardup`, clustered in `merge.py`).

Both keep the FIRST occurrence in reading order (sources in config order, files sorted, lines
in order), so which copy survives never depends on timing or file-system order.
"""

from __future__ import annotations

from domaintune.data.records import Record, Reject
from domaintune.governance.neardup import exact_digest

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


class UniqueIds:
    """Ids key the split and every downstream lineage lookup, so a repeated id is rejected."""

    name = "dedup.ids"
    corpus_wide = True  # needs every record: runs after the shards, in keeper order

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}  # id -> "file:line" of the record that holds it

    def __call__(self, rec: Record) -> Record | Reject:
        first = self._seen.get(rec.id)
        if first is None:
            self._seen[rec.id] = f"{rec.path}:{rec.line}" if rec.line is not None else rec.path
            return rec
        return Reject.of(rec, "duplicate_id",
                         f"id '{rec.id}' is already used by {first}; make id_field values unique "
                         "or give the sources distinct names (derived ids start with the name)")


class ExactDedup:
    """Drop a document whose normalized text was already kept (hashed: memory stays small)."""

    name = "dedup.exact"
    corpus_wide = True

    def __init__(self) -> None:
        self._kept: dict[bytes, str] = {}  # text digest -> id of the kept copy

    def __call__(self, rec: Record) -> Record | Reject:
        digest = exact_digest(rec.text)
        kept = self._kept.get(digest)
        if kept is None:
            self._kept[digest] = rec.id
            return rec
        return Reject.of(rec, EXACT_DUPLICATE, f"same normalized text as kept record '{kept}'")
