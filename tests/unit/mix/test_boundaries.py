from domaintune.mix.boundaries import boundary_tokens, split_pieces


def _offsets(words):
    out, pos = [], 0
    for w in words:
        out.append((pos, pos + len(w)))
        pos += len(w)
    return "".join(words), out


def test_boundaries_found_after_sentences_and_paragraphs_in_both_languages():
    text, offs = _offsets(["Fees", " apply", ".", " Next", "\n\n", "段落", "。", "下一句"])
    kinds = boundary_tokens(text, offs)
    assert kinds[3] == "sentence" and kinds[5] == "paragraph" and kinds[7] == "sentence"
    assert 1 not in kinds and 2 not in kinds


def test_never_cut_inside_a_multibyte_character():
    # byte-level BPE gives several tokens the same character span
    text = "好。好"
    offs = [(0, 1), (1, 2), (2, 3), (2, 3)]
    assert boundary_tokens(text, offs) == {2: "sentence"}


def test_split_prefers_paragraph_then_sentence_then_hard_cut():
    pieces = split_pieces(40, {5: "sentence", 9: "paragraph", 14: "sentence"}, max_len=16)
    assert [(p.start, p.end, p.cut) for p in pieces] == [
        (0, 9, "paragraph"), (9, 14, "sentence"), (14, 30, "hard"), (30, 40, "end")]
    assert pieces[-1].end == 40 and all(p.end - p.start <= 16 for p in pieces)
