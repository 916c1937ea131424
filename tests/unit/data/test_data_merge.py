"""Stage-level behaviour of the corpus-wide phase: near-dup removal, keepers, split grouping,
stratification by a metadata field."""

from __future__ import annotations

import json
import random
from collections import Counter

from domaintune.artifacts import RunDir
from domaintune.data import run


def _words(rng, n=200):
    # letters only: the quality filters' digit ratio would reject "w1234"-style words
    return " ".join("w" + "".join(chr(97 + int(d)) for d in str(rng.randrange(4000))) for _ in range(n))


def _rows(tmp_path):
    rng = random.Random(0)
    rows = [{"id": f"d{i}", "text": _words(rng), "dept": "loans" if i % 2 else "cards"} for i in range(60)]
    near = []
    for i in range(0, 12):  # planted: same text, one word changed, plus a longer copy of d0
        tokens = rows[i]["text"].split()
        tokens[50] = "changed"
        near.append({"id": f"n{i}", "text": " ".join(tokens), "dept": rows[i]["dept"]})
    near.append({"id": "long0", "text": rows[0]["text"] + " plus a tail", "dept": "cards"})
    return rows, near


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_near_duplicates_removed_with_deterministic_keeper(tmp_path, write_jsonl, make_config):
    rows, near = _rows(tmp_path)
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", near)  # across files and shards
    cfg = make_config([{"path": "a.jsonl", "stream": "s", "id_field": "id"},
                       {"path": "b.jsonl", "stream": "s", "id_field": "id"}])
    run(cfg, RunDir(tmp_path / "run"))
    out = tmp_path / "run" / "data"
    rejects = _read(out / "rejects.jsonl")
    assert sum(r["reason"] == "near_duplicate" for r in rejects) == 13
    lineage = {e["id"]: e for e in _read(out / "lineage.jsonl")}
    # the longest copy is the keeper ("changed" is longer than the word it replaced)
    assert lineage["long0"]["outcome"] == "kept" and lineage["d0"]["duplicate_of"] == "long0"
    assert lineage["n0"]["duplicate_of"] == "long0" and lineage["d1"]["duplicate_of"] == "n1"
    assert lineage["long0"]["near_duplicates"] == 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["duplicates"] == 13 and stats["near_dedup"]["clusters"] == 12


def test_kept_near_duplicates_share_a_split_and_meta_strata_are_split_alone(tmp_path, write_jsonl,
                                                                          make_config):
    rows, near = _rows(tmp_path)
    write_jsonl(tmp_path / "a.jsonl", rows + near)
    cfg = make_config([{"path": "a.jsonl", "stream": "s", "id_field": "id"}],
                      near_dedup={"action": "keep"}, split={"stratify": "meta.dept"})
    run(cfg, RunDir(tmp_path / "run"))
    out = tmp_path / "run" / "data"
    split_of = {r["id"]: split for split in ("train", "val", "test") for r in _read(out / "s" / f"{split}.jsonl")}
    assert len(split_of) == 73
    for i in range(12):
        assert split_of[f"n{i}"] == split_of[f"d{i}"]
    assert split_of["long0"] == split_of["d0"]
    dept = {r["id"]: r["dept"] for r in rows + near}
    per = Counter((dept[i], s) for i, s in split_of.items())
    for d in ("loans", "cards"):  # each department present in val and test
        assert per[(d, "val")] >= 1 and per[(d, "test")] >= 1
