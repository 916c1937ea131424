import pytest

from domaintune.benchmarks.extractors import EXTRACTORS, after_hashes, first_letter, last_number, strip
from domaintune.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("She pays $1,234.50 in total.", "1234.5"),
    ("5 apples and 7 pears, so 12", "12"),
    ("The answer is -3.", "-3"),
    ("no digits", ""),
    ("2.000", "2"),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_gsm8k_gold_after_hashes():
    assert after_hashes("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert after_hashes("no marker 5") == "5"


def test_first_letter_and_strip():
    assert first_letter("The answer is (B).") == "B"
    assert first_letter("nothing") == ""
    assert strip("  Paris \n") == "paris"


def test_user_extractor_by_import_path():
    from domaintune.benchmarks.extractors import get_extractor

    assert get_extractor("domaintune.benchmarks.extractors:first_letter")("(C)") == "C"
    assert get_extractor("strip")(" A ") == "a"


def test_registry_resolves_names_and_suggests():
    assert EXTRACTORS.get("last_number")("x 4") == "4"
    with pytest.raises(ConfigError, match="did you mean 'last_number'"):
        EXTRACTORS.get("last_numbr")
