"""Answer extractors for generation tasks: model output (or gold field) -> the string compared.

An open set: tasks name an extractor in YAML (`extract: last_number`), users can register their
own as "module:function" in `EXTRACTORS`.
"""

from __future__ import annotations

import re

from domaintune.registry import Registry, import_target

_NUMBER = re.compile(r"-?[$¥€£]?\s?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str:
    """'$1,234.50' -> '1234.5': currency signs, thousands separators and trailing zeros removed."""
    cleaned = re.sub(r"[$¥€£,\s]", "", text)
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    return cleaned


def last_number(text: str) -> str:
    """The last number in the text (GSM8K style: the final computed value), normalized; '' if none."""
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else ""


def after_hashes(text: str) -> str:
    """GSM8K gold answers end in '#### 42': the number after the last '####'; else the last number."""
    _, sep, tail = text.rpartition("####")
    return last_number(tail) if sep else last_number(text)


def first_letter(text: str) -> str:
    """The first standalone option letter A-J ('The answer is (B).' -> 'B'); '' if none."""
    match = re.search(r"\b([A-J])\b", text)
    return match.group(1) if match else ""


def strip(text: str) -> str:
    """Whitespace-trimmed, case-folded text (plain exact match)."""
    return " ".join(text.split()).casefold()


def first_line(text: str) -> str:
    """The first non-empty line, trimmed and case-folded."""
    return next((strip(line) for line in text.splitlines() if line.strip()), "")


def get_extractor(name: str):
    """A registered name ('last_number') or the user's own 'package.module:function'."""
    return import_target(name) if ":" in name else EXTRACTORS.get(name)


EXTRACTORS: Registry = Registry("answer extractor")
for _name in ("last_number", "after_hashes", "first_letter", "strip", "first_line"):
    EXTRACTORS.register(_name, f"domaintune.benchmarks.extractors:{_name}")
