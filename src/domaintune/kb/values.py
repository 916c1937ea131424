"""Values stated in text: whether a text states a value exactly, and the numbers a sentence states.

One matcher for `kb eval` (does the answer state the labelled value?) and for the answer filter
(which shown source states the numbers an answer sentence gives?), so a citation the server
attributes is checked by the same rule the evaluation uses.
"""

from __future__ import annotations

import re
import unicodedata

_TRAILING_ZEROS = re.compile(r"(\d)\.(\d*?)0+(?!\d)")  # 1.50 -> 1.5, 2.00 -> 2: the same value
# a number as written: 35, 1,000, 1.5, ８ (NFKC makes full-width digits ASCII first)
_NUMBER = re.compile(r"(?<![\d.,])\d(?:[\d,]*\d)?(?:\.\d+)?")


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace(" ", "").lower()
    return _TRAILING_ZEROS.sub(lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text)


def holds(text: str, answer: str) -> bool:
    """`text` states the value `answer` exactly: as a whole number, so "$35" is not found in "$350"
    nor "5美元" in "15美元" (formatting may differ: "1.50%" is "1.5%", "$1,000" is "$1,000.00")."""
    value = re.escape(_norm(answer))
    before = r"(?<![\d.,])" if answer[:1].isdigit() else ""
    return re.search(before + value + r"(?![\d]|[.,]\d)", _norm(text)) is not None


def numbers(text: str) -> list[str]:
    """The distinct numbers `text` states, in order ("$35 or 1.5%" -> ["35", "1.5"])."""
    seen: dict[str, None] = {}
    for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text)):
        seen.setdefault(m.group(0), None)
    return list(seen)
