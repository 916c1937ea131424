"""Chunks: exact slices at sentence/paragraph boundaries, within the token budget, with overlap."""

from __future__ import annotations

import pytest
from kb_helpers import count_tokens

from domaintune.kb.chunking import chunk_spans, spans

EN = ("Wire transfers cost $35 for Standard customers. Premier customers pay $20! Private Banking pays nothing? "
      "Fees are reviewed every year.\n\nCards can be replaced for $10. Express delivery costs $25.")
ZH = ("海港银行标准客户境外汇出汇款的手续费是35美元。尊享客户为20美元！私人银行客户免费？\n\n"
      "补办银行卡收费10美元；加急寄送收费25美元。")


@pytest.mark.parametrize("text", [EN, ZH])
def test_chunks_are_exact_slices_within_budget(text):
    for max_tokens, overlap in [(12, 0), (20, 6), (60, 10)]:
        chunks = chunk_spans(text, count_tokens, max_tokens, overlap)
        assert chunks and chunks[0][0] == 0 and chunks[-1][1] == len(text.rstrip())
        for a, b in chunks:
            assert count_tokens(text[a:b]) <= max_tokens
            assert text[a:b] == text[a:b].strip()
        # together they cover every sentence
        for s in spans(text, count_tokens, max_tokens):
            assert any(a <= s.start and s.end <= b for a, b in chunks)


def test_sentences_split_on_chinese_and_english_punctuation():
    zh = [ZH[s.start:s.end] for s in spans(ZH, count_tokens, 1000)]
    assert zh == ["海港银行标准客户境外汇出汇款的手续费是35美元。", "尊享客户为20美元！", "私人银行客户免费？",
                  "补办银行卡收费10美元；", "加急寄送收费25美元。"]
    en = [EN[s.start:s.end] for s in spans(EN, count_tokens, 1000)]
    assert en[0] == "Wire transfers cost $35 for Standard customers." and en[1] == "Premier customers pay $20!"
    first = spans("A rate of 3.75 is fine. Next.", count_tokens, 99)[0]
    assert first.end == len("A rate of 3.75 is fine.")


def test_overlap_repeats_whole_sentences_and_paragraphs_are_kept_apart():
    chunks = chunk_spans(EN, count_tokens, 14, 6)
    texts = [EN[a:b] for a, b in chunks]
    assert any(texts[i].split(". ")[-1] in texts[i + 1] for i in range(len(texts) - 1))  # overlap
    wide = [EN[a:b] for a, b in chunk_spans(EN, count_tokens, 25, 0)]
    assert wide[0].endswith("every year.") and wide[1].startswith("Cards")  # the paragraph break wins
    assert chunk_spans(EN, count_tokens, 14, 0) != chunks


def test_a_sentence_longer_than_the_budget_is_cut_into_pieces_that_fit():
    text = " ".join(f"word{i}" for i in range(100)) + "."
    chunks = chunk_spans(text, count_tokens, 16, 4)
    assert len(chunks) >= 7 and all(count_tokens(text[a:b]) <= 16 for a, b in chunks)
    assert "".join(text[a:b] + " " for a, b in chunks).split() == text.split()  # no word lost or split
    long_zh = "汇" * 50 + "。"
    assert all(count_tokens(long_zh[a:b]) <= 10 for a, b in chunk_spans(long_zh, count_tokens, 10, 0))
