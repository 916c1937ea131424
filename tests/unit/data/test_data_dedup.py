from __future__ import annotations

from domaintune.data.dedup import ExactDedup, UniqueIds
from domaintune.data.filters import MinChars
from domaintune.data.records import Record, Reject
from domaintune.data.steps import apply_steps


def rec(id_: str, text: str, line: int = 1) -> Record:
    return Record(id_, text, "s", "src", "f.jsonl", line)


def test_exact_dedup_keeps_first_and_names_it():
    dedup = ExactDedup()
    assert isinstance(dedup(rec("a", "same text")), Record)
    assert isinstance(dedup(rec("b", "other text")), Record)
    rej = dedup(rec("c", "same text", line=3))
    assert isinstance(rej, Reject) and rej.reason == "exact_duplicate" and "'a'" in rej.detail
    assert (rej.file, rej.line, rej.excerpt) == ("f.jsonl", 3, "same text")


def test_unique_ids_points_to_first_holder():
    ids = UniqueIds()
    ids(rec("x", "one", line=1))
    rej = ids(rec("x", "two", line=9))
    assert rej.reason == "duplicate_id" and "f.jsonl:1" in rej.detail


def test_min_chars_rejects_empty_even_at_zero_and_stops_the_chain():
    assert MinChars(0)(rec("a", "")).reason == "too_short"
    assert isinstance(MinChars(0)(rec("a", "x")), Record)
    ids = UniqueIds()
    assert apply_steps(rec("a", "tiny"), [MinChars(10), ids]).reason == "too_short"
    assert isinstance(ids(rec("a", "long enough text")), Record)  # the short one claimed no id
