from domaintune.mix.sampling import Doc, draw_stream, token_targets


def test_token_targets_sum_to_budget_and_follow_weights():
    t = token_targets({"english": 3, "chinese": 6, "finance": 1}, 1001)
    assert sum(t.values()) == 1001
    assert t == {"english": 300, "chinese": 601, "finance": 100}


def _docs(n=20):
    return [Doc(f"d{i}", list(range(10 + i))) for i in range(n)]


def test_draw_hits_target_exactly_and_is_deterministic():
    a = draw_stream(_docs(), 0, target=137, max_len=8, max_repeats=3, seed=1, min_piece=1)
    b = draw_stream(_docs(), 0, target=137, max_len=8, max_repeats=3, seed=1, min_piece=1)
    assert a.tokens == 137 and [s.doc_id for s in a.segments] == [s.doc_id for s in b.segments]
    assert all(len(s.ids) <= 8 for s in a.segments)
    c = draw_stream(_docs(), 0, target=137, max_len=8, max_repeats=3, seed=2, min_piece=1)
    assert [s.doc_id for s in a.segments] != [s.doc_id for s in c.segments]


def test_long_documents_split_at_boundaries_and_record_it():
    doc = Doc("long", list(range(30)), {6: "sentence", 12: "paragraph", 25: "sentence"})
    d = draw_stream([doc], 0, target=30, max_len=16, max_repeats=1, seed=0, min_piece=1)
    assert [len(s.ids) for s in d.segments] == [12, 13, 5]
    assert [(s.piece, s.cut) for s in d.segments] == [(0, "paragraph"), (1, "sentence"), (2, "end")]
    assert [t for s in d.segments for t in s.ids] == list(range(30))  # nothing lost or repeated


def test_small_stream_repeats_then_reports_exhaustion():
    docs = [Doc("only", list(range(10)))]
    d = draw_stream(docs, 0, target=35, max_len=16, max_repeats=2, seed=0)
    assert d.exhausted and d.epochs == 2 and d.tokens == 20
    d = draw_stream(docs, 0, target=25, max_len=16, max_repeats=4, seed=0, min_piece=1)
    assert not d.exhausted and d.tokens == 25 and d.epochs == 3


def test_tail_smaller_than_min_piece_is_not_worth_a_segment():
    d = draw_stream([Doc("only", list(range(10)))], 0, target=25, max_len=16, max_repeats=4, seed=0)
    assert d.tokens == 20 and not d.exhausted
