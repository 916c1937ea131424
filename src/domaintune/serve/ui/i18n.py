"""The console's UI strings, English and Chinese, from one catalog (strings.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGUAGES = ("en", "zh")


@cache
def catalog() -> dict[str, dict[str, str]]:
    text = resources.files("domaintune.serve.ui").joinpath("strings.json").read_text(encoding="utf-8")
    return json.loads(text)


def pick(lang: str | None, default: str) -> str:
    return lang if lang in LANGUAGES else default


def translator(lang: str):
    strings, english = catalog()[lang], catalog()["en"]

    def t(key: str, **values) -> str:
        text = strings.get(key) or english.get(key)
        if text is None:  # a missing key is a bug in a template: show it, do not hide the control
            return key
        return text.format(**values) if values else text

    return t


def js_strings(lang: str) -> dict[str, str]:
    """The strings console.js needs, passed in a <meta> attribute (escaped, never as script)."""
    t = translator(lang)
    return {k.removeprefix("js."): t(k) for k in catalog()["en"] if k.startswith("js.")}
