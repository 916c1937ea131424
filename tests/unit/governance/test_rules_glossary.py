from __future__ import annotations

import pytest
import yaml

from domaintune.errors import ConfigError
from domaintune.governance.glossary import Glossary
from domaintune.governance.normalize import (
    ChineseScript,
    Normalizer,
    NormalizeUnicode,
    NormalizeWhitespace,
    Rewrite,
    Width,
    to_full_width_punct,
    to_half_width,
)
from domaintune.governance.rules import RewriteRule, load_rules

# Protected terms that generic cleaners damage: NFKC and half-width fold Ｃ＋＋ and the full-width
# product code, t2s rewrites the traditional brand name, and a "split letters from digits" rule
# breaks IC50 and T+0.
PROTECTED = ["Ｃ＋＋", "T+0", "α-interferon", "IC50", "ＨＢ－２０２４", "臺灣銀行"]
SPLIT_RULE = RewriteRule(pattern=r"([A-Za-z])\+?(\d)", replace=r"\1 \2")


def generic_cleaner():
    return [NormalizeUnicode("NFKC"), NormalizeWhitespace(), Width("half"), ChineseScript("t2s"),
            Rewrite([SPLIT_RULE])]


def test_generic_cleaner_damages_protected_terms_and_ours_does_not():
    text = "Ｃ＋＋  code, T+0 settlement, α-interferon IC50; 型號ＨＢ－２０２４ 由臺灣銀行發行。"
    damaged = Normalizer(generic_cleaner())(text).text
    for term in PROTECTED:
        if term != "α-interferon":  # NFKC keeps Greek letters; the others are all damaged
            assert term not in damaged, term
    assert "IC 50" in damaged and "C++" in damaged and "台湾银行" in damaged

    ours = Normalizer(generic_cleaner(), Glossary(PROTECTED))(text)
    for term in PROTECTED:
        assert ours.text.count(term) == 1, term
    # ... while the text around the terms is still cleaned
    assert ours.text == "Ｃ＋＋ code, T+0 settlement, α-interferon IC50; 型号ＨＢ－２０２４ 由臺灣銀行发行。"
    assert ours.changed == ["normalize.whitespace", "normalize.chinese"]  # NFKC/width had nothing left to do
    assert ours.damaged == []


def test_glossary_matches_whole_tokens_and_survives_sentinel_lookalikes():
    glossary = Glossary(["IC50"])
    masked, originals = glossary.mask("IC50 IC500 xIC50 IC50值")
    assert originals == ["IC50"] and masked.count(chr(0xF0000)) == 2
    text = "keep \U000F0000 as is, IC50 too"  # a private-use character already in the text
    assert Glossary.unmask(*glossary.mask(text)) == text


def test_rule_that_eats_a_protected_term_is_reported_and_the_text_kept():
    steps = [Rewrite([RewriteRule(pattern=r"see .*", replace="see below")])]
    out = Normalizer(steps, Glossary(["IC50"]))("see IC50 table")
    assert out.damaged == ["IC50"] and out.changed == ["rules.rewrite"] and out.text == "see IC50 table"
    twice = Normalizer([Rewrite([RewriteRule(pattern=r"(\S+) table", replace=r"\1 \1 table")])], Glossary(["IC50"]))
    assert twice("see IC50 table").damaged == ["IC50"]  # a repeated term is damage too


def test_rewrite_rules_with_word_boundaries_and_language():
    rules = [RewriteRule(pattern=r"\bbid\b", replace="twice daily", lang="en"),
             RewriteRule(pattern=r"(?<![A-Za-z])bid(?![A-Za-z])", replace="每日两次", lang="zh")]
    step = Rewrite(rules)
    assert step.transform("Take 5 mg bid with food; forbid morbid bids.") == \
        "Take 5 mg twice daily with food; forbid morbid bids."
    assert step.transform("口服，5毫克bid，饭后服用。") == "口服，5毫克每日两次，饭后服用。"
    upper = Rewrite([RewriteRule(pattern=r"\bbid\b", replace="twice daily", ignore_case=True)])
    assert upper.transform("BID dosing") == "twice daily dosing"


def test_width_and_chinese_script():
    assert to_half_width("ＡＢＣ１２３！\u3000x") == "ABC123! x"
    assert to_full_width_punct("你好,世界! 3.5 ok, fine. 结束.") == "你好，世界！ 3.5 ok, fine. 结束。"
    assert ChineseScript("t2s").transform("軟體資訊") == "软体资讯"
    assert ChineseScript("s2t").transform("软件信息") == "軟件信息"


def write_rules(tmp_path, body) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, allow_unicode=True),
                    encoding="utf-8")
    return str(path)


def test_rules_file_errors_name_file_and_entry(tmp_path):
    with pytest.raises(ConfigError, match=r"rewrites\[0\]\.pattern"):
        load_rules(write_rules(tmp_path, {"rewrites": [{"pattern": "(", "replace": "x"}]}))
    with pytest.raises(ConfigError, match=r"rewrites\.0\.replace"):
        load_rules(write_rules(tmp_path, {"rewrites": [{"pattern": "a", "replacement": "x"}]}))
    with pytest.raises(ConfigError, match="line 2, column 1: invalid YAML"):
        load_rules(write_rules(tmp_path, "glossary: [unclosed\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_rules(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="serve.rules_file: file not found"):
        load_rules(tmp_path / "missing.yaml", key="serve.rules_file")  # errors name the caller's key
