from __future__ import annotations

import pytest

from domaintune.data.normalize import (
    NormalizeUnicode,
    NormalizeWhitespace,
    normalize_unicode,
    normalize_whitespace,
)
from domaintune.data.records import Record


def rec(text: str) -> Record:
    return Record("id", text, "s", "src", "f", 1)


def test_nfkc_folds_full_width():
    assert normalize_unicode("ＡＢＣ１２３", "NFKC") == "ABC123"
    assert normalize_unicode("ＡＢＣ１２３", "NFC") == "ＡＢＣ１２３"
    assert normalize_unicode("ＡＢＣ１２３", "none") == "ＡＢＣ１２３"
    assert normalize_unicode("e\u0301", "NFC") == "\u00e9"


@pytest.mark.parametrize("raw, expected", [
    ("a  b\t\tc", "a b c"),
    ("trailing   \nspaces\t\n", "trailing\nspaces"),
    ("p1\n\n\n\n\np2", "p1\n\np2"),
    ("p1\n  \n \t\n\np2", "p1\n\np2"),  # whitespace-only lines count as blank
    ("windows\r\nand\rold mac", "windows\nand\nold mac"),
    ("\n\n  doc  \n\n", "doc"),
    ("def f():\n    return  1", "def f():\n    return 1"),  # indentation survives
    ("", ""),
    ("x\u3000\u3000y \u00a0z\x0bw", "x y z w"),  # any Unicode blank, not only space/tab
])
def test_whitespace_rules(raw, expected):
    assert normalize_whitespace(raw) == expected


def test_steps_recorded_only_when_text_changes():
    r = NormalizeWhitespace()(NormalizeUnicode("NFKC")(rec("ＡＢＣ")))
    assert r.text == "ABC" and r.steps == ["normalize.unicode"]
    r = NormalizeWhitespace()(NormalizeUnicode("NFKC")(rec("already clean")))
    assert r.steps == []
    r = NormalizeWhitespace()(NormalizeUnicode("NFKC")(rec("Ｘ  y ")))
    assert r.text == "X y" and r.steps == ["normalize.unicode", "normalize.whitespace"]
