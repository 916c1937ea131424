"""The corpus-wide phase after the shards: whole-corpus steps (unique ids, exact dedup),
near-duplicate clustering, and the near-dup-aware, stratified split.

Everything here is ordered by content and position, never by shard timing, so the outputs are
byte-identical however the shards ran. The keeper of a duplicate set is the best copy: highest
`meta.quality_score` (when a quality step sets it), then (for near-duplicates) the longest text,
then the earliest in reading order.

The merge streams: what it knows per document is in an on-disk index (merge_index.py), texts stay in
the shard files and are read back by byte offset when needed, and `Merged` hands the outputs out in
reading order, so its memory does not grow with the corpus.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

from domaintune.config import DataConfig
from domaintune.data.dedup import NEAR_DUPLICATE
from domaintune.data.merge_index import CORPUS_DROPPED, KEPT, NEAR_DROPPED, MergeIndex
from domaintune.data.records import Record, Reject, excerpt, text_sha
from domaintune.data.shards import Dropped, ShardLines, dropped_in_order, kept_lines, shard_ranks, signature_rows
from domaintune.data.split import SPLITS, fill_splits, group_hash, stratum
from domaintune.data.steps import Step, apply_steps
from domaintune.errors import DataError
from domaintune.governance.canonical import canonical
from domaintune.governance.neardup import KeeperShingles, band_keys, band_params, exact_digest, jaccard, shingles

INDEX = ".merge-index.sqlite"
POS = "s, f, q"  # reading order


def quality(meta: dict[str, Any]) -> float:
    score = meta.get("quality_score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0


def _signed(key: int) -> int:
    return key - (1 << 64) if key >= 1 << 63 else key  # SQLite integers are signed 64-bit


class IndexedRecord(Record):
    """A kept record as the corpus steps see it: small fields from the index, the text and meta read
    back from the shard on first use (most records never need them)."""

    def __init__(self, row: tuple, lines: ShardLines, ranks: list[str]):
        did, _s, _f, _q, rid, path, line, source, stream, _orig, shard, offset, digest, steps = row
        self._loc, self._lines, self._obj, self._digest = (ranks[shard], offset), lines, None, digest
        self._set_text = False
        super().__init__(rid, "", stream, source, path, line, json.loads(steps), {})
        self._set_text = True  # from here on an assignment is a step changing the text

    def _record(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = self._lines.record(*self._loc)
        return self._obj

    @property
    def text(self) -> str:
        return self._record()["text"]

    @text.setter
    def text(self, value: str) -> None:
        if self._set_text:
            raise DataError(f"a corpus-wide step changed the text of record '{self.id}'; corpus-wide steps "
                            "(corpus_wide = True) may only accept or reject a record")

    @property
    def meta(self) -> dict[str, Any]:
        return self._record()["meta"]

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        pass  # Record.__init__'s placeholder: the real meta is the shard's

    @property
    def digest(self) -> bytes:
        return self._digest if self._digest is not None else exact_digest(self.text)


def load_index(index: MergeIndex, shard_dir: Path, data: DataConfig) -> list[str]:
    """One pass over the shards' kept files into the index; the shard numbers, in order."""
    ranks = shard_ranks(shard_dir)
    stratify = data.split.stratify

    def rows() -> Iterator[tuple]:
        for shard, rank in enumerate(ranks):
            for row, (offset, obj) in enumerate(kept_lines(shard_dir, rank)):
                rec, (s, f, q) = obj["record"], obj["pos"]
                src, text, meta = rec["source"], rec["text"], rec["meta"]
                try:
                    digest = exact_digest(text)
                except UnicodeEncodeError:
                    digest = None  # computed (and failing, as before) only if exact dedup asks for it
                yield (s, f, q, shard, offset, row, rec["id"], quality(meta), len(text), text_sha(text), digest,
                       obj["orig"], rec["stream"], src["name"], src["path"], src["line"],
                       json.dumps(rec["steps"], ensure_ascii=False), stratum(meta, src["name"], stratify))

    index.many("INSERT INTO docs (s, f, q, shard, offset, row, id, quality, chars, sha, digest, orig, stream, "
               "source, path, line, steps, stratum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               rows())
    return ranks


def _drop(index: MergeIndex, row: tuple, step: str, rej: Reject) -> None:
    did, s, f, q, rid, orig = row
    index("INSERT INTO corpus_dropped VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          (did, s, f, q, rid, step, orig, rej.reason, rej.detail, rej.file, rej.line, rej.source, rej.excerpt))


def run_corpus_steps(index: MergeIndex, steps: list[Step], lines: ShardLines, ranks: list[str]) -> None:
    """The corpus-wide steps over every kept record in keeper order (best quality first, then reading
    order); what they remember goes to the index (`memo`), what they reject to `corpus_dropped`."""
    if not steps:
        return
    for step in steps:
        if hasattr(step, "memo"):
            step.memo = index.disk_map()
    query = (f"SELECT did, {POS}, id, path, line, source, stream, orig, shard, offset, digest, steps FROM docs "
             f"ORDER BY quality DESC, {POS}")
    for row in index(query):
        rec = IndexedRecord(row, lines, ranks)

        def rejected(step: Step, rej: Reject, row: tuple = row) -> None:
            _drop(index, (row[0], row[1], row[2], row[3], row[4], row[9]), step.name, rej)

        apply_steps(rec, steps, on_reject=rejected)
    index(f"UPDATE docs SET state = {CORPUS_DROPPED} WHERE did IN (SELECT did FROM corpus_dropped)")


def near_duplicates(index: MergeIndex, data: DataConfig, lines: ShardLines, ranks: list[str],
                    shard_dir: Path) -> None:
    """Near-duplicate -> keeper into `neardup`, as `governance.neardup.cluster` finds them (same bands,
    same candidates, same keepers), with the band tables on disk: one row per band and document, grouped
    by SQLite; only documents sharing a band key with another are walked in Python."""
    nd = data.near_dedup
    if not nd.enabled or (index.one(f"SELECT COUNT(*) FROM docs WHERE state = {KEPT}") or 0) < 2:
        return
    index(f"INSERT INTO ranks (rank, did) SELECT ROW_NUMBER() OVER (ORDER BY quality DESC, chars DESC, {POS}) - 1, "
          f"did FROM docs WHERE state = {KEPT}")
    bands, rows = band_params(nd.threshold, nd.num_perm)
    for shard, rank in enumerate(ranks):
        wanted = index("SELECT d.row, r.rank FROM docs d JOIN ranks r ON r.did = d.did WHERE d.shard = ? "
                       "ORDER BY d.row", (shard,))
        index.many("INSERT INTO bands VALUES (?, ?, ?)", _band_rows(signature_rows(shard_dir, rank), wanted,
                                                                    bands, rows))
    index("INSERT INTO shared (band, h) SELECT band, h FROM bands GROUP BY band, h HAVING COUNT(*) > 1")
    index("CREATE INDEX shared_key ON shared (band, h)")
    index("INSERT INTO members SELECT b.rank, s.gid FROM bands b JOIN shared s ON s.band = b.band AND s.h = b.h")

    def text_of(rank: int) -> str:
        shard, offset = index("SELECT d.shard, d.offset FROM ranks r JOIN docs d ON d.did = r.did WHERE r.rank = ?",
                              (rank,)).fetchone()
        return canonical(lines.record(ranks[shard], offset)["text"])

    kept_shingles = KeeperShingles(nd.ngram, text_of)
    dups = []
    for rank, group in groupby(index("SELECT rank, gid FROM members ORDER BY rank, gid"), key=lambda r: r[0]):
        gids = [gid for _, gid in group]
        marks = ", ".join("?" * len(gids))
        candidates = [k for (k,) in index(f"SELECT DISTINCT rank FROM keepers WHERE gid IN ({marks}) ORDER BY rank",
                                          gids)]
        keeper = None
        if candidates:
            mine = shingles(text_of(rank), nd.ngram)
            keeper = next((k for k in candidates if jaccard(kept_shingles[k], mine) >= nd.threshold), None)
        if keeper is None:
            index.many("INSERT INTO keepers VALUES (?, ?)", ((gid, rank) for gid in gids))
        else:
            dups.append((rank, keeper))
            if len(dups) >= 4096:
                _save_dups(index, dups)
    _save_dups(index, dups)
    if nd.action == "drop":
        _drop_near_duplicates(index, data, lines, ranks)


def _band_rows(signatures: Iterator, wanted, bands: int, rows: int) -> Iterator[tuple[int, int, int]]:
    """(band, key, rank) of the shard's surviving documents (`wanted`: (row, rank) ascending by row)."""
    next_row = 0
    sig = None
    for row, rank in wanted:
        while next_row <= row:
            sig = next(signatures)
            next_row += 1
        for band, key in enumerate(band_keys(sig, bands, rows)):
            yield band, _signed(key), rank


def _save_dups(index: MergeIndex, dups: list[tuple[int, int]]) -> None:
    index.many("INSERT INTO neardup SELECT d.did, d.id, k.did, k.id FROM ranks rd JOIN docs d ON d.did = rd.did, "
               "ranks rk JOIN docs k ON k.did = rk.did WHERE rd.rank = ? AND rk.rank = ?", dups)
    dups.clear()


def _drop_near_duplicates(index: MergeIndex, data: DataConfig, lines: ShardLines, ranks: list[str]) -> None:
    threshold = data.near_dedup.threshold
    found = index(f"SELECT d.did, d.s, d.f, d.q, d.id, d.orig, d.shard, d.offset, d.path, d.line, d.source, "
                  f"n.keeper_id FROM neardup n JOIN docs d ON d.did = n.dup_did ORDER BY {POS}")
    for did, s, f, q, rid, orig, shard, offset, path, line, source, keeper in found:
        detail = (f"near-duplicate of kept record '{keeper}' (estimated Jaccard >= data.near_dedup.threshold="
                  f"{threshold:g})")
        rej = Reject(NEAR_DUPLICATE, detail, path, line, source, excerpt(lines.record(ranks[shard], offset)["text"]))
        _drop(index, (did, s, f, q, rid, orig), "dedup.near", rej)
    index(f"UPDATE docs SET state = {NEAR_DROPPED} WHERE did IN (SELECT dup_did FROM neardup)")


def split_records(index: MergeIndex, data: DataConfig, seed: int) -> None:
    """Each kept document's split (`docs.label`). A group (near-duplicates with their keeper, and identical
    texts if exact dedup is off) is split as one, with its keeper's stream and stratum."""
    # first kept record (reading order) of each text
    index("CREATE TABLE first_text AS SELECT sha, id FROM (SELECT sha, id, ROW_NUMBER() OVER (PARTITION BY sha "
          f"ORDER BY {POS}) AS n FROM docs WHERE state = {KEPT}) WHERE n = 1")
    index("CREATE INDEX first_text_sha ON first_text (sha)")
    index("UPDATE docs SET grp = COALESCE((SELECT keeper_id FROM neardup WHERE dup_did = docs.did), "
          f"(SELECT id FROM first_text WHERE first_text.sha = docs.sha)) WHERE state = {KEPT}")
    index("CREATE INDEX docs_id ON docs (id, state)")
    # the group's home: the kept record holding the group's id (the last in reading order, as a dict by id)
    homes = index(f"SELECT g.grp, g.n, d.stream, d.stratum FROM (SELECT grp, COUNT(*) AS n FROM docs WHERE state = "
                  f"{KEPT} GROUP BY grp) g JOIN docs d ON d.id = g.grp AND d.state = {KEPT} "
                  f"ORDER BY g.grp, d.s, d.f, d.q")

    def groups() -> Iterator[tuple]:
        for grp, same in groupby(homes, key=lambda r: r[0]):
            *_, (_, n, stream, stratum_) = same
            yield grp, n, stream, stratum_, group_hash(seed, grp)

    index.many("INSERT INTO groups (grp, n, stream, stratum, ghash) VALUES (?, ?, ?, ?, ?)", groups())
    index("CREATE INDEX groups_order ON groups (stream, stratum, ghash)")
    buckets = index("SELECT stream, stratum, SUM(n) FROM groups GROUP BY stream, stratum").fetchall()
    for stream, stratum_, total in buckets:
        ordered = index("SELECT grp, n FROM groups WHERE stream = ? AND stratum = ? ORDER BY ghash",
                        (stream, stratum_))
        index.many("INSERT INTO labels VALUES (?, ?)", fill_splits(ordered, total, data.split))
    index(f"UPDATE docs SET label = (SELECT label FROM labels WHERE labels.grp = docs.grp) WHERE state = {KEPT}")
    index(f"CREATE INDEX docs_split ON docs (stream, label, {POS}) WHERE state = {KEPT}")


class Merged:
    """The merge's result, read from the index in a deterministic order (nothing of it is in memory)."""

    def __init__(self, index: MergeIndex, lines: ShardLines, ranks: list[str], shard_dir: Path,
                 streams: list[str]):
        self.index, self.lines, self.ranks, self.shard_dir, self.streams = index, lines, ranks, shard_dir, streams

    def close(self) -> None:
        self.lines.close()
        self.index.close()

    def __enter__(self) -> Merged:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def dropped(self) -> Iterator[Dropped]:
        """Every dropped record (by a shard step, a corpus step or as a near-duplicate), in reading order."""
        corpus = (Dropped((s, f, q), rid, step, orig, Reject(reason, detail, file, line, source, ex))
                  for s, f, q, rid, step, orig, reason, detail, file, line, source, ex in
                  self.index(f"SELECT {POS}, id, step, orig, reason, detail, file, line, source, excerpt "
                             f"FROM corpus_dropped ORDER BY {POS}"))
        return heapq.merge(dropped_in_order(self.shard_dir), corpus, key=lambda d: d.pos)

    def kept(self) -> Iterator[tuple]:
        """(pos, id, path, line, source, orig, final sha, steps, stream, split, near-duplicates dropped or kept
        in its favour) per kept record, in reading order."""
        rows = self.index(f"SELECT {POS}, d.id, d.path, d.line, d.source, d.orig, d.sha, d.steps, d.stream, d.label, "
                          f"COALESCE(n.c, 0) FROM docs d LEFT JOIN (SELECT keeper_id, COUNT(*) AS c FROM neardup "
                          f"GROUP BY keeper_id) n ON n.keeper_id = d.id WHERE d.state = {KEPT} ORDER BY {POS}")
        for s, f, q, rid, path, line, source, orig, sha, steps, stream, label, ndups in rows:
            yield (s, f, q), rid, path, line, source, orig, sha, json.loads(steps), stream, label, ndups

    def duplicate_of(self, record_id: str) -> str | None:
        return self.index.one("SELECT keeper_id FROM neardup WHERE dup_id = ? ORDER BY dup_did DESC LIMIT 1",
                              (record_id,))

    def split_records(self, stream: str, split: str) -> Iterator[tuple[tuple[int, int, int], dict[str, Any]]]:
        """(pos, record JSON) of one split's documents, in reading order; texts read from the shards."""
        rows = self.index(f"SELECT {POS}, shard, offset FROM docs WHERE state = {KEPT} AND stream = ? AND label = ? "
                          f"ORDER BY {POS}", (stream, split)).fetchmany
        while block := rows(1024):
            for s, f, q, shard, offset in block:
                yield (s, f, q), self.lines.record(self.ranks[shard], offset)

    def docs(self) -> dict[str, dict[str, int]]:
        counts = {(s, p): n for s, p, n in self.index(
            f"SELECT stream, label, COUNT(*) FROM docs WHERE state = {KEPT} GROUP BY stream, label")}
        return {s: {p: counts.get((s, p), 0) for p in SPLITS} for s in self.streams}

    def near_dedup_counts(self) -> tuple[int, int]:
        """(clusters, duplicates): keepers with near-duplicates, and the near-duplicates."""
        row = self.index("SELECT COUNT(DISTINCT keeper_id), COUNT(*) FROM neardup").fetchone()
        return row[0], row[1]

    def clusters(self, top: int = 20) -> list[dict[str, Any]]:
        """The largest near-duplicate clusters (ties by keeper id)."""
        ranked = self.index("SELECT keeper_id, COUNT(*) AS c FROM neardup GROUP BY keeper_id "
                            "ORDER BY c DESC, keeper_id LIMIT ?", (top,)).fetchall()
        return [{"keeper": k, "duplicates": [d for (d,) in self.index(
                    "SELECT dup_id FROM neardup WHERE keeper_id = ? ORDER BY dup_id", (k,))], "size": n + 1}
                for k, n in ranked]


def merge(shard_dir: Path, stage_dir: Path, corpus_steps: list[Step], data: DataConfig, seed: int,
          streams: list[str]) -> Merged:
    index = MergeIndex(stage_dir / INDEX)
    lines = ShardLines(shard_dir)
    try:
        ranks = load_index(index, shard_dir, data)
        run_corpus_steps(index, corpus_steps, lines, ranks)
        near_duplicates(index, data, lines, ranks, shard_dir)
        split_records(index, data, seed)
        index.db.commit()
    except BaseException:
        lines.close()
        index.close()
        raise
    return Merged(index, lines, ranks, shard_dir, streams)

