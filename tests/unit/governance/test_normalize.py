from __future__ import annotations

import pytest

from domaintune.governance.normalize import (
    Normalizer,
    NormalizeUnicode,
    NormalizeWhitespace,
    normalize_unicode,
    normalize_whitespace,
    transforms,
)


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


def test_normalizer_names_only_the_transforms_that_changed_the_text():
    steps = [NormalizeUnicode("NFKC"), NormalizeWhitespace()]
    out = Normalizer(steps)("ＡＢＣ")
    assert out.text == "ABC" and out.changed == ["normalize.unicode"] and out.damaged == []
    assert Normalizer(steps)("already clean").changed == []
    out = Normalizer(steps)("Ｘ  y ")
    assert out.text == "X y" and out.changed == ["normalize.unicode", "normalize.whitespace"]


def test_transforms_in_fixed_order_and_none_leaves_one_out():
    assert [t.name for t in transforms()] == ["normalize.unicode", "normalize.whitespace"]
    assert [t.name for t in transforms("none", False, width="half")] == ["normalize.width"]
    assert transforms("none", False) == []
