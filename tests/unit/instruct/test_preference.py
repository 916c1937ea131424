import json

import pytest

from domaintune.errors import DataError
from domaintune.instruct.preference import (
    PairError,
    check_reject_share,
    parse_pair,
    read_pairs,
    split_pairs,
    write_rejects,
)

U, A, S = "user", "assistant", "system"


def m(role, content):
    return {"role": role, "content": content}


def test_string_pair_becomes_conversational_with_system():
    pair = parse_pair({"prompt": "Fee?", "chosen": "35 USD.", "rejected": "No idea.", "system": "Be polite."})
    assert pair.as_trl() == {"prompt": [m(S, "Be polite."), m(U, "Fee?")], "chosen": [m(A, "35 USD.")],
                             "rejected": [m(A, "No idea.")]}
    assert pair.as_text() == {"prompt": "Be polite.\nFee?\n", "chosen": "35 USD.", "rejected": "No idea."}


def test_explicit_message_lists():
    pair = parse_pair({"prompt": [m(U, "Hi"), m(A, "Hello"), m(U, "Fee?")], "chosen": [m(A, "35")],
                       "rejected": [m(A, "99")]})
    assert len(pair.prompt) == 3 and pair.chosen == [m(A, "35")]


def test_two_whole_conversations_split_at_the_shared_prefix():
    chosen = [m(S, "Bank bot"), m(U, "Fee?"), m(A, "35 USD")]
    rejected = [m(S, "Bank bot"), m(U, "Fee?"), m(A, "Go away")]
    pair = parse_pair({"chosen": chosen, "rejected": rejected})
    assert pair.prompt == chosen[:2] and pair.chosen == [m(A, "35 USD")] and pair.rejected == [m(A, "Go away")]


def test_identical_conversations_keep_the_answer_out_of_the_prompt():
    conv = [m(U, "Fee?"), m(A, "35 USD")]
    pair = parse_pair({"chosen": conv, "rejected": conv})
    assert pair.prompt == [m(U, "Fee?")] and pair.chosen == pair.rejected == [m(A, "35 USD")]


@pytest.mark.parametrize("row, reason", [
    ({"prompt": "Fee?", "chosen": "35"}, "missing field(s) rejected"),
    ({"chosen": "a", "rejected": "b"}, "missing field prompt"),
    ({"prompt": "  ", "chosen": "a", "rejected": "b"}, "'prompt' is empty"),
    ({"prompt": [m(U, "")], "chosen": [m(A, "a")], "rejected": [m(A, "b")]}, "empty turn"),
    ({"prompt": [m(A, "hi")], "chosen": [m(A, "a")], "rejected": [m(A, "b")]}, "role order"),
    ({"prompt": [m(U, "q"), m(U, "q2")], "chosen": [m(A, "a")], "rejected": [m(A, "b")]}, "role order"),
    ({"prompt": [m(U, "q"), m(S, "late system")], "chosen": [m(A, "a")], "rejected": [m(A, "b")]}, "role order"),
    ({"prompt": [m(U, "q")], "chosen": [m(U, "a")], "rejected": [m(A, "b")]}, "only assistant turns"),
    ({"prompt": [m("bot", "q")], "chosen": [m(A, "a")], "rejected": [m(A, "b")]}, "is not one of"),
    ({"chosen": [m(U, "x"), m(A, "a")], "rejected": [m(U, "y"), m(A, "b")]}, "share no prompt"),
    (["not", "an", "object"], "JSON object"),
])
def test_invalid_rows_are_rejected_with_a_reason(row, reason):
    with pytest.raises(PairError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_pair(row)


def test_read_quarantines_bad_rows_with_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "Fee?", "chosen": "35", "rejected": "99"}
    path.write_text("\n".join([json.dumps(good), "{broken", json.dumps({"prompt": "x", "chosen": "y"}), "",
                               json.dumps(good)]) + "\n")
    result = read_pairs([path])
    assert len(result.pairs) == 2 and [p.line for p in result.pairs] == [1, 5]
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejects] == [
        (2, "invalid JSON"), (3, "missing field(s) rejected (need prompt/chosen/rejected)")]
    rejects = write_rejects(tmp_path / "rejects.jsonl", result.rejects)
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert rows[0]["source"] == str(path) and rows[0]["row"] == "{broken"
    with pytest.raises(DataError, match="2 of 4 rows are malformed"):
        check_reject_share(result, 0.2, "align.data.domain", rejects)
    check_reject_share(result, 0.5, "align.data.domain", rejects)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="preference file not found"):
        read_pairs([tmp_path / "nope.jsonl"])


def test_split_is_deterministic_and_keeps_both_sides():
    pairs = [parse_pair({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) for i in range(10)]
    train, val = split_pairs(pairs, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2 and split_pairs(pairs, 0.2, seed=0) == (train, val)
    assert split_pairs(pairs[:2], 0.1, seed=0)[1]  # at least one held-out pair
