from __future__ import annotations

import pytest
import yaml

from domaintune.config import DataConfig
from domaintune.data.records import Record, Reject
from domaintune.data.rules import Protected, text_steps
from domaintune.data.steps import TextStep, apply_steps
from domaintune.errors import ConfigError
from domaintune.governance.glossary import Glossary
from domaintune.governance.normalize import (
    ChineseScript,
    NormalizeUnicode,
    NormalizeWhitespace,
    Rewrite,
    Width,
)
from domaintune.governance.rules import RewriteRule

# Protected terms that generic cleaners damage (see tests/unit/governance/test_rules_glossary.py):
# here the same check through the data stage's record steps.
PROTECTED = ["Ｃ＋＋", "T+0", "α-interferon", "IC50", "ＨＢ－２０２４", "臺灣銀行"]
SPLIT_RULE = RewriteRule(pattern=r"([A-Za-z])\+?(\d)", replace=r"\1 \2")


def rec(text: str) -> Record:
    return Record("r1", text, "s", "src", "f.jsonl", 1)


def generic_cleaner():
    return [NormalizeUnicode("NFKC"), NormalizeWhitespace(), Width("half"), ChineseScript("t2s"),
            Rewrite([SPLIT_RULE])]


def test_generic_cleaner_damages_protected_terms_and_ours_does_not():
    text = "Ｃ＋＋  code, T+0 settlement, α-interferon IC50; 型號ＨＢ－２０２４ 由臺灣銀行發行。"
    damaged = apply_steps(rec(text), [TextStep(t) for t in generic_cleaner()]).text
    for term in PROTECTED:
        if term != "α-interferon":  # NFKC keeps Greek letters; the others are all damaged
            assert term not in damaged, term
    assert "IC 50" in damaged and "C++" in damaged and "台湾银行" in damaged

    ours = Protected(Glossary(PROTECTED), generic_cleaner())(rec(text))
    for term in PROTECTED:
        assert ours.text.count(term) == 1, term
    # ... while the text around the terms is still cleaned
    assert ours.text == "Ｃ＋＋ code, T+0 settlement, α-interferon IC50; 型号ＨＢ－２０２４ 由臺灣銀行发行。"
    assert ours.steps == ["normalize.whitespace", "normalize.chinese"]  # NFKC/width had nothing left to do


def test_rule_that_eats_a_protected_term_rejects_the_record():
    steps = [Rewrite([RewriteRule(pattern=r"see .*", replace="see below")])]
    out = Protected(Glossary(["IC50"]), steps)(rec("see IC50 table"))
    assert isinstance(out, Reject) and out.reason == "rules.glossary_damaged"
    assert "IC50" in out.detail and "rules.rewrite" in out.detail


def write_rules(tmp_path, body) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, allow_unicode=True),
                    encoding="utf-8")
    return str(path)


def data_config(**kw) -> DataConfig:
    return DataConfig(sources=[{"path": "x", "stream": "s"}], **kw)


def test_text_steps_from_rules_file(tmp_path):
    path = write_rules(tmp_path, {"chinese": "t2s", "glossary": ["臺灣銀行"],
                                  "rewrites": [{"pattern": r"(?<![A-Za-z])FX(?![A-Za-z])",
                                                "replace": "foreign exchange"}]})
    steps = text_steps(data_config(rules_file=path))
    assert len(steps) == 1 and isinstance(steps[0], Protected)
    assert [s.name for s in steps[0].steps] == ["normalize.unicode", "normalize.whitespace",
                                                "normalize.chinese", "rules.rewrite"]
    out = apply_steps(rec("臺灣銀行的FX業務"), steps)
    assert out.text == "臺灣銀行的foreign exchange业务"
    # without a rules file: the plain unicode + whitespace steps, as before
    assert [s.name for s in text_steps(data_config())] == ["normalize.unicode", "normalize.whitespace"]


def test_rules_file_conflict_names_both_places(tmp_path):
    conflict = write_rules(tmp_path, {"width": "full"})
    with pytest.raises(ConfigError, match="conflicts"):
        text_steps(data_config(rules_file=conflict, normalize={"width": "half"}))
